"""Ed25519 signatures over the desired state: the origin signs, nodes verify with a pinned key."""

from __future__ import annotations

import base64
import binascii
import os
from pathlib import Path

import msgspec
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from edge.control.messages import DesiredState, SignedState

__all__ = ["SignatureError", "Signer", "open_state", "seal_state", "verify"]


class SignatureError(ValueError):
    """A signature, key or signed payload that does not check out; the message says which."""


def _b64decode(value: str, what: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError(f"{what}: Expected base64, got {value[:40]!r}") from None


class Signer:
    """The origin's ed25519 private key, kept in a PEM file of mode 0600."""

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key
        raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        self.public_key = base64.b64encode(raw).decode("ascii")

    @classmethod
    def generate(cls, path: Path) -> Signer:
        """Create a new key and write it to `path` (mode 0600, which must not exist yet)."""
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(pem)
        return cls(key)

    @classmethod
    def from_file(cls, path: Path) -> Signer:
        """Load the key from `path`; raises SignatureError when it is not an ed25519 PEM key."""
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except ValueError as exc:
            raise SignatureError(f"{path}: not a PEM private key: {exc}") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise SignatureError(f"{path}: Expected an ed25519 private key, got {type(key).__name__}")
        return cls(key)

    def sign(self, payload: bytes) -> bytes:
        """The 64-byte signature of `payload`."""
        return self._key.sign(payload)


def verify(public_key_b64: str, payload: bytes, signature: bytes) -> None:
    """Check `signature` over `payload` with a base64 raw public key; raises SignatureError."""
    raw = _b64decode(public_key_b64, "public key")
    try:
        key = Ed25519PublicKey.from_public_bytes(raw)
    except ValueError:
        raise SignatureError(f"public key: Expected 32 raw bytes, got {len(raw)}") from None
    try:
        key.verify(signature, payload)
    except InvalidSignature:
        raise SignatureError("signature does not match the payload and key") from None


def seal_state(state: DesiredState, signer: Signer) -> SignedState:
    """Encode and sign a desired state for the wire."""
    payload = msgspec.json.encode(state)
    return SignedState(
        payload=base64.b64encode(payload).decode("ascii"),
        signature=base64.b64encode(signer.sign(payload)).decode("ascii"),
        key=signer.public_key,
    )


def open_state(signed: SignedState, pinned_key: str) -> DesiredState:
    """Verify `signed` against the pinned public key and decode it; raises SignatureError."""
    if signed.key != pinned_key:
        raise SignatureError(
            f"state is signed with key {signed.key!r}, expected the pinned key {pinned_key!r}"
        )
    payload = _b64decode(signed.payload, "payload")
    verify(pinned_key, payload, _b64decode(signed.signature, "signature"))
    try:
        return msgspec.json.decode(payload, type=DesiredState)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise SignatureError(f"signed payload is not a DesiredState: {exc}") from None
