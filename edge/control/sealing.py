"""Secrets on the wire: sealed to one node's X25519 key, signed by the origin's ed25519 key.

The origin encodes a `NodeSecrets` (every function's secrets, the node id and the revision) as
JSON, seals it to the node's public key with a libsodium sealed box (PyNaCl's `SealedBox`:
an ephemeral X25519 key, XSalsa20-Poly1305; only the holder of the node's private key opens it)
and signs the sealed bytes with its ed25519 key (a sealed box alone is anonymous: anyone who knows
the node's public key could make one). A node checks the signature with its pinned origin key,
opens the box and checks that it was sealed for this node id and for the revision of the signed
state it came with, so an old envelope cannot be replayed beside a newer state.
"""

from __future__ import annotations

import base64
import binascii
import os
from pathlib import Path

import msgspec
from nacl.exceptions import CryptoError
from nacl.public import PrivateKey, PublicKey, SealedBox

from edge.control.messages import NodeSecrets, SealedSecrets
from edge.control.signing import Signer, verify

__all__ = ["NodeKey", "SealError", "load_public_key", "open_secrets", "seal_secrets"]

# Signatures over sealed secrets start with this, so one can never pass for a state's signature.
_DOMAIN = b"edge-secrets-v1\0"


class SealError(ValueError):
    """A node key file or sealed secrets that cannot be used; the message says which and why."""


def _b64decode(value: str, what: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise SealError(f"{what}: Expected base64, got {value[:40]!r}") from None


def load_public_key(value: str, what: str) -> PublicKey:
    """A base64 raw X25519 public key; raises SealError naming `what` when it is not one."""
    raw = _b64decode(value, what)
    if len(raw) != PublicKey.SIZE:
        raise SealError(f"{what}: Expected {PublicKey.SIZE} raw bytes of an X25519 key, got {len(raw)}")
    return PublicKey(raw)


class NodeKey:
    """A node's X25519 key pair; the private half lives in one file of mode 0600, base64 text."""

    def __init__(self, key: PrivateKey) -> None:
        self._key = key
        self.public_key = base64.b64encode(bytes(key.public_key)).decode("ascii")

    @classmethod
    def load_or_create(cls, path: Path) -> NodeKey:
        """The key in `path`, made (0600, never replaced) when the file does not exist yet.

        Raises SealError for a file that is not a key; several processes may race to make it.
        """
        try:
            text = path.read_text()
        except FileNotFoundError:
            key = PrivateKey.generate()
            tmp = path.with_name(f".{path.name}.{os.getpid()}")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(base64.b64encode(bytes(key)).decode("ascii") + "\n")
            try:
                os.link(tmp, path)  # fails when another process made it first: use that one
            except FileExistsError:
                return cls.load_or_create(path)
            finally:
                os.unlink(tmp)
            return cls(key)
        raw = _b64decode(text.strip(), f"{path}")
        if len(raw) != PrivateKey.SIZE:
            raise SealError(
                f"{path}: Expected base64 of a {PrivateKey.SIZE}-byte X25519 private key,"
                f" got {len(raw)} bytes;"
                " move the file away and restart the node to make a new key (then an admin runs"
                " `edge secret forget-node NODE_ID` so the origin accepts it)"
            )
        return cls(PrivateKey(raw))

    def open(self, box: bytes) -> bytes:
        """The plaintext of a box sealed to this key; raises SealError when it was not."""
        try:
            return SealedBox(self._key).decrypt(box)
        except CryptoError:
            raise SealError("sealed secrets: the box does not open with this node's key") from None


def seal_secrets(secrets: NodeSecrets, public_key: str, signer: Signer) -> SealedSecrets:
    """Seal `secrets` to a node's base64 X25519 public key and sign the sealed bytes."""
    box = SealedBox(load_public_key(public_key, "node public key")).encrypt(msgspec.json.encode(secrets))
    return SealedSecrets(
        node_id=secrets.node_id,
        box=base64.b64encode(box).decode("ascii"),
        signature=base64.b64encode(signer.sign(_DOMAIN + box)).decode("ascii"),
    )


def open_secrets(
    sealed: SealedSecrets, key: NodeKey, pinned_key: str, revision: int, node_id: str | None = None
) -> NodeSecrets:
    """Verify, open and decode sealed secrets; raises SignatureError or SealError.

    They must carry `revision` (the state they came with) and, unless `node_id` is None, that id.
    """
    box = _b64decode(sealed.box, "sealed secrets: `box`")
    verify(pinned_key, _DOMAIN + box, _b64decode(sealed.signature, "sealed secrets: `signature`"))
    try:
        secrets = msgspec.json.decode(key.open(box), type=NodeSecrets)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise SealError(f"sealed secrets: the opened box is not a NodeSecrets: {exc}") from None
    if secrets.revision != revision:
        raise SealError(
            f"sealed secrets: Expected revision {revision} (the signed state's), got {secrets.revision}"
        )
    if node_id is not None and secrets.node_id != node_id:
        raise SealError(f"sealed secrets: Expected node id {node_id!r}, got {secrets.node_id!r}")
    return secrets
