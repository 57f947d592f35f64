"""The origin's data directory: database, blobs, signing key and the first admin token."""

from __future__ import annotations

import hashlib
import os
import secrets
import time
from pathlib import Path
from typing import Literal

from edge.control.signing import Signer
from edge.origin.store import Store

__all__ = ["ROLES", "DataDir", "Role", "hash_token", "new_token"]

Role = Literal["admin", "node"]
ROLES: tuple[Role, ...] = ("admin", "node")


def hash_token(token: str) -> str:
    """How a token is stored: its sha256 hex digest, never the token itself."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_token(
    store: Store, role: Role, now: float, expires_at: float | None = None, node_id: str | None = None
) -> str:
    """Create a token with `role` (expiring at `expires_at`, bound to `node_id`), store its hash and
    return the token (shown once)."""
    if role not in ROLES:
        raise ValueError(f"role: Expected one of {', '.join(ROLES)}, got {role!r}")
    token = f"edge_{role}_{secrets.token_urlsafe(32)}"
    with store.transaction():
        store.add_token(hash_token(token), role, now, expires_at, node_id)
    return token


class DataDir:
    """The layout of `--data`: `origin.db`, `blobs/`, `signing-key.pem`, `admin-token`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.database = root / "origin.db"
        self.blobs = root / "blobs"
        self.signing_key = root / "signing-key.pem"
        self.admin_token = root / "admin-token"

    def initialize(self, now: float | None = None) -> bool:
        """Create what is missing (key, database, first admin token); True on the first start."""
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)
        if not self.signing_key.exists():
            Signer.generate(self.signing_key)
        store = Store(self.database)
        try:
            if store.count_tokens("admin") > 0:
                return False
            token = new_token(store, "admin", time.time() if now is None else now)
        finally:
            store.close()
        fd = os.open(self.admin_token, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(token + "\n")
        os.chmod(self.admin_token, 0o600)
        return True

    def open_store(self) -> Store:
        """Open the metadata database."""
        return Store(self.database)
