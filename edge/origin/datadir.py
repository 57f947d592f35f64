"""The origin's data directory: database, blobs, signing key and the first admin token."""

from __future__ import annotations

import hashlib
import os
import secrets
import time
from pathlib import Path
from typing import Literal

from edge.control.signing import Signer
from edge.origin.metadata import MetadataStore, open_metadata
from edge.origin.vault import Vault

__all__ = ["ROLES", "DataDir", "Role", "hash_token", "new_token"]

Role = Literal["admin", "node"]
ROLES: tuple[Role, ...] = ("admin", "node")


def hash_token(token: str) -> str:
    """How a token is stored: its sha256 hex digest, never the token itself."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_token(
    store: MetadataStore, role: Role, now: float, expires_at: float | None = None, node_id: str | None = None
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
    """The layout of `--data`: `origin.db`, `blobs/`, `signing-key.pem`, `secrets-key`, `admin-token`."""

    def __init__(self, root: Path, database_url: str = "") -> None:
        self.root = root
        # "" for SQLite in `origin.db` here, or a postgresql:// URL several origins share.
        self.database_url = database_url
        self.database = root / "origin.db"
        self.blobs = root / "blobs"
        self.signing_key = root / "signing-key.pem"
        # Encrypts functions' secrets at rest (edge/origin/vault.py); made on first start.
        self.secrets_key = root / "secrets-key"
        self.admin_token = root / "admin-token"

    def initialize(self, now: float | None = None) -> bool:
        """Create what is missing (keys, database, first admin token); True on the first start.

        Raises ValueError when the database was first used with other keys (another origin's)."""
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)
        if not self.signing_key.exists():
            Signer.generate(self.signing_key)
        Vault.load_or_create(self.secrets_key)
        store = self.open_store()
        try:
            if self.database_url:  # a shared database: every origin on it must hold the same keys
                self._check_keys(store)
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

    def open_store(self) -> MetadataStore:
        """Open the metadata database (raises DatabaseError when it cannot be used)."""
        return open_metadata(self.database_url, self.root)

    def _check_keys(self, store: MetadataStore) -> None:
        """Every origin on one database must sign with one key and encrypt secrets with one key:
        the first pins both (the secrets key by its sha256), the others must match."""
        secrets_key = hashlib.sha256(self.secrets_key.read_bytes().strip()).hexdigest()
        wanted = {
            "signing-key": (Signer.from_file(self.signing_key).public_key, self.signing_key),
            "secrets-key": (secrets_key, self.secrets_key),
        }
        for name, (value, path) in wanted.items():
            pinned = store.pin(name, value)
            if pinned != value:
                raise ValueError(
                    f"{path}: Expected the {name} the database was first used with, got another;"
                    f" every origin on one database needs the same keys: copy {path.name} from the data"
                    " directory of the origin that started first into this one"
                )
