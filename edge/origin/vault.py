"""Functions' secrets at the origin: encrypted at rest, sealed to each node (docs/secrets.md).

Values are encrypted with the origin's at-rest key (`secrets-key` in the data directory, 0600,
apart from the signing key) by XChaCha20-Poly1305 with the function name and key as associated
data, so a row copied onto another function or key does not decrypt. They are decrypted only to
seal them to a node's registered X25519 key (edge/control/sealing.py), once per node and revision.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import re
from collections.abc import Callable, Iterable
from pathlib import Path

import msgspec
from nacl.exceptions import CryptoError
from nacl.secret import Aead
from nacl.utils import random

from edge.control.admin import KeyForgotten, SecretChanged, SecretInfo, SecretList
from edge.control.messages import NodeInfo, NodeSecrets, SealedSecrets
from edge.control.sealing import SealError, load_public_key, seal_secrets
from edge.control.signing import Signer
from edge.origin.metadata import MetadataStore
from edge.origin.store import SecretRecord

__all__ = ["MAX_SECRETS", "MAX_VALUE_BYTES", "Secrets", "SecretsRefused", "Vault"]

log = logging.getLogger("edge.origin")

# A value is UTF-8 text of at most this many bytes (an environment variable, e.g. a PEM key).
MAX_VALUE_BYTES = 64 * 1024
# Secrets one function may have.
MAX_SECRETS = 100
KEY_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
# Sealed secrets kept per node id (the newest revision each); past this the cache starts over.
_CACHE_NODES = 4096


class SecretsRefused(Exception):
    """A secrets request the origin refuses; `status` is the HTTP status for it."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Vault:
    """The at-rest key: 32 random bytes, base64 in a file of mode 0600."""

    def __init__(self, key: bytes) -> None:
        self._aead = Aead(key)

    @classmethod
    def load_or_create(cls, path: Path) -> Vault:
        """The key in `path`, made on first start; raises ValueError for a file that is no key."""
        try:
            text = path.read_text()
        except FileNotFoundError:
            key = random(Aead.KEY_SIZE)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(base64.b64encode(key).decode("ascii") + "\n")
            return cls(key)
        if os.stat(path).st_mode & 0o077:
            log.warning("%s: other users may read the secrets key; run `chmod 600 %s`", path, path)
        try:
            key = base64.b64decode(text.strip(), validate=True)
        except (binascii.Error, ValueError):
            key = b""
        if len(key) != Aead.KEY_SIZE:
            raise ValueError(
                f"{path}: Expected base64 of {Aead.KEY_SIZE} bytes (the key that encrypts secrets at rest),"
                " got something else; restore it from a backup (without it, stored secrets cannot be read)"
            )
        return cls(key)

    def encrypt(self, function: str, key: str, value: bytes) -> bytes:
        """The value encrypted for the row (function, key): random nonce + ciphertext + tag."""
        return bytes(self._aead.encrypt(value, _associated(function, key)))

    def decrypt(self, record: SecretRecord) -> str:
        """The value of a stored secret; raises ValueError when the row does not decrypt."""
        try:
            return self._aead.decrypt(record.sealed, _associated(record.function, record.key)).decode()
        except CryptoError:
            raise ValueError(
                f"secret {record.key} of function {record.function} does not decrypt with this origin's"
                " secrets-key (the key file was replaced?); set it again with `edge secret set`"
            ) from None


def _associated(function: str, key: str) -> bytes:
    return f"edge-secret\0{function}\0{key}".encode()


def check_key(key: str) -> str:
    """A secret's key is an environment variable name; raises SecretsRefused (400) otherwise."""
    if not KEY_NAME.fullmatch(key):
        raise SecretsRefused(
            400,
            f"secret key: Expected an environment variable name (a letter or '_', then letters, digits"
            f" or '_', at most 128), got {key!r}",
        )
    return key


def check_value(key: str, value: bytes) -> None:
    """A value is 1 to MAX_VALUE_BYTES bytes of UTF-8 without NUL; raises SecretsRefused (400)."""
    if not 1 <= len(value) <= MAX_VALUE_BYTES:
        raise SecretsRefused(
            400, f"secret {key}: Expected a value of 1 to {MAX_VALUE_BYTES} bytes, got {len(value)} bytes"
        )
    try:
        text = value.decode()
    except UnicodeDecodeError as exc:
        raise SecretsRefused(
            400,
            f"secret {key}: Expected UTF-8 text (it becomes an environment variable), got a byte"
            f" {value[exc.start]:#04x} at offset {exc.start} that is not",
        ) from None
    if "\0" in text:
        raise SecretsRefused(
            400,
            f"secret {key}: Expected no NUL character (an environment variable cannot hold one),"
            f" got one at offset {text.index(chr(0))}",
        )


class Secrets:
    """Every function's secrets: set, removed, listed without values, sealed per node."""

    def __init__(
        self,
        store: MetadataStore,
        vault: Vault,
        signer: Signer,
        bump: Callable[[], int],
        clock: Callable[[], float],
    ) -> None:
        self.store = store
        self.vault = vault
        self.signer = signer
        self._bump = bump
        self._clock = clock
        # node id -> (revision, what was sealed for it): one seal per node and revision.
        self._sealed: dict[str, tuple[int, SealedSecrets | None]] = {}
        # (revision, values) last decrypted: every node's seal at that revision uses them.
        self._decrypted: tuple[int, dict[str, dict[str, str]]] | None = None

    def set(self, name: str, key: str, value: bytes, env: Iterable[str] = ()) -> SecretChanged:
        """Store (or replace) a secret and bump the revision; `env` is the stable version's [env] keys."""
        check_key(key)
        check_value(key, value)
        with self.store.transaction():
            existing = {record.key for record in self.store.secrets(name)}
            if key not in existing and len(existing) >= MAX_SECRETS:
                raise SecretsRefused(
                    409,
                    f"function {name} has {len(existing)} secrets, the most it may have;"
                    " remove one with `edge secret rm` first",
                )
            sealed = self.vault.encrypt(name, key, value)
            self.store.put_secret(
                SecretRecord(function=name, key=key, sealed=sealed, size=len(value), updated_at=self._clock())
            )
            revision = self._bump()
        return SecretChanged(
            name=name, key=key, revision=revision, size=len(value), overrides_env=key in set(env)
        )

    def remove(self, name: str, key: str) -> SecretChanged:
        """Delete a secret and bump the revision; raises SecretsRefused (404) when there is none."""
        check_key(key)
        with self.store.transaction():
            if not self.store.delete_secret(name, key):
                keys = ", ".join(record.key for record in self.store.secrets(name)) or "none"
                raise SecretsRefused(404, f"function {name} has no secret {key} (its secrets: {keys})")
            revision = self._bump()
        return SecretChanged(name=name, key=key, revision=revision, removed=True)

    def listing(self, name: str, env: Iterable[str] = ()) -> SecretList:
        """The keys, sizes and update times of a function's secrets, never their values."""
        env = set(env)
        return SecretList(
            name=name,
            secrets=[
                SecretInfo(key=r.key, size=r.size, updated_at=r.updated_at, overrides_env=r.key in env)
                for r in self.store.secrets(name)
            ],
            nodes_without_key=[n.info.node_id for n in self.store.nodes() if not n.info.public_key],
        )

    def names(self) -> dict[str, list[str]]:
        """Function name -> the keys of its secrets (what the desired state carries)."""
        found: dict[str, list[str]] = {}
        for record in self.store.secrets():
            found.setdefault(record.function, []).append(record.key)
        return found

    def sealed_for(self, node_id: str, revision: int, functions: Iterable[str]) -> SealedSecrets | None:
        """The secrets of `functions` sealed to `node_id`'s registered key at `revision`; None when
        the node has no key or there is nothing to seal. A row that does not decrypt is logged and
        left out (the node then reports that function's missing secret)."""
        cached = self._sealed.get(node_id)
        if cached is not None and cached[0] == revision:
            return cached[1]
        node = self.store.node(node_id)
        sealed = None
        values = self._values(revision, functions) if node is not None and node.info.public_key else {}
        if node is not None and values:
            secrets = NodeSecrets(node_id=node_id, revision=revision, functions=values)
            sealed = seal_secrets(secrets, node.info.public_key, self.signer)
        if len(self._sealed) >= _CACHE_NODES:
            self._sealed.clear()
        self._sealed[node_id] = (revision, sealed)
        return sealed

    def _values(self, revision: int, functions: Iterable[str]) -> dict[str, dict[str, str]]:
        """The decrypted secrets of `functions` at `revision` (decrypted once per revision, for all nodes)."""
        if self._decrypted is not None and self._decrypted[0] == revision:
            return self._decrypted[1]
        wanted = set(functions)
        values: dict[str, dict[str, str]] = {}
        for record in self.store.secrets():
            if record.function not in wanted:
                continue
            try:
                values.setdefault(record.function, {})[record.key] = self.vault.decrypt(record)
            except ValueError as exc:  # left out: that function fails to switch on the node, not the sync
                log.error("%s", exc)
        self._decrypted = (revision, values)
        return values

    def registering(self, info: NodeInfo) -> NodeInfo:
        """What to store for a node that registers: its key is pinned once registered.

        A node that sends no key keeps the one it registered before; another key is refused
        (SecretsRefused 409) until an admin forgets the old one (`edge secret forget-node`).
        """
        self._sealed.pop(info.node_id, None)
        if info.public_key:
            try:
                load_public_key(info.public_key, "request body: `$.public_key`")
            except SealError as exc:
                raise SecretsRefused(400, str(exc)) from None
        known = self.store.node(info.node_id)
        registered = known.info.public_key if known is not None else ""
        if not registered:
            return info
        if not info.public_key:
            return msgspec.structs.replace(info, public_key=registered)
        if info.public_key != registered:
            raise SecretsRefused(
                409,
                f"node {info.node_id} registered the public key {registered}; this registration has"
                f" {info.public_key}. A node keeps its key in `node-key` in its data directory: restore"
                f" that file, or, if the node really has a new key, an admin runs"
                f" `edge secret forget-node {info.node_id}` and the node registers again",
            )
        return info

    def forget_key(self, node_id: str) -> KeyForgotten:
        """Forget the key a node registered, so it may register a new one; raises SecretsRefused (404)."""
        with self.store.transaction():
            node = self.store.node(node_id)
            if node is None:
                raise SecretsRefused(404, f"no node `{node_id}` is registered")
            if not node.info.public_key:
                raise SecretsRefused(404, f"node `{node_id}` has no public key registered")
            self.store.set_node_info(msgspec.structs.replace(node.info, public_key=""))
        self._sealed.pop(node_id, None)
        return KeyForgotten(node_id=node_id, public_key=node.info.public_key)
