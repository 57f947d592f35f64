"""Signing and verifying the desired state, without sockets."""

from __future__ import annotations

import base64
import stat
from pathlib import Path

import msgspec
import pytest

from edge.control.messages import DesiredState, FunctionState, PurgeOrder, Release, SignedState
from edge.control.signing import SignatureError, Signer, open_state, seal_state, verify

STATE = DesiredState(
    revision=7,
    issued_at=1700000000.0,
    functions=[
        FunctionState(
            name="hello",
            routes=["/hi"],
            timeout_ms=1000,
            env={"A": "b"},
            cache_ttl=0,
            releases=[Release(version="a" * 64, weight=90), Release(version="b" * 64, weight=10)],
        )
    ],
    purges=[PurgeOrder(id=3, function="hello", kind="tag", value="t")],
)


@pytest.fixture
def signer(tmp_path: Path) -> Signer:
    return Signer.generate(tmp_path / "key.pem")


def test_key_file_is_private_and_loads_back(tmp_path: Path, signer: Signer) -> None:
    path = tmp_path / "key.pem"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert Signer.from_file(path).public_key == signer.public_key
    with pytest.raises(FileExistsError):
        Signer.generate(path)


def test_not_a_key(tmp_path: Path) -> None:
    path = tmp_path / "junk.pem"
    path.write_text("junk")
    with pytest.raises(SignatureError, match=rf"^{path}: not a PEM private key: "):
        Signer.from_file(path)


def test_round_trip(signer: Signer) -> None:
    signed = seal_state(STATE, signer)
    assert signed.key == signer.public_key
    assert open_state(signed, signer.public_key) == STATE
    assert msgspec.json.decode(base64.b64decode(signed.payload), type=DesiredState) == STATE


def test_verify(signer: Signer) -> None:
    signature = signer.sign(b"payload")
    verify(signer.public_key, b"payload", signature)
    with pytest.raises(SignatureError) as caught:
        verify(signer.public_key, b"payloaD", signature)
    assert str(caught.value) == "signature does not match the payload and key"
    with pytest.raises(SignatureError) as caught:
        verify(base64.b64encode(b"short").decode(), b"payload", signature)
    assert str(caught.value) == "public key: Expected 32 raw bytes, got 5"
    with pytest.raises(SignatureError) as caught:
        verify("not base64!", b"payload", signature)
    assert str(caught.value) == "public key: Expected base64, got 'not base64!'"


def test_open_state_refuses_tampering_and_other_keys(signer: Signer, tmp_path: Path) -> None:
    signed = seal_state(STATE, signer)
    payload = base64.b64decode(signed.payload).replace(b'"weight":90', b'"weight":10')
    tampered = SignedState(
        payload=base64.b64encode(payload).decode(), signature=signed.signature, key=signed.key
    )
    with pytest.raises(SignatureError, match=r"^signature does not match the payload and key$"):
        open_state(tampered, signer.public_key)
    other = Signer.generate(tmp_path / "other.pem")
    forged = seal_state(STATE, other)
    with pytest.raises(SignatureError) as caught:
        open_state(forged, signer.public_key)
    assert str(caught.value) == (
        f"state is signed with key {other.public_key!r}, expected the pinned key {signer.public_key!r}"
    )
    relabelled = SignedState(payload=forged.payload, signature=forged.signature, key=signer.public_key)
    with pytest.raises(SignatureError, match=r"^signature does not match the payload and key$"):
        open_state(relabelled, signer.public_key)


def test_signed_payload_must_be_a_state(signer: Signer) -> None:
    payload = b'{"revision": "x"}'
    signed = SignedState(
        payload=base64.b64encode(payload).decode(),
        signature=base64.b64encode(signer.sign(payload)).decode(),
        key=signer.public_key,
    )
    with pytest.raises(SignatureError) as caught:
        open_state(signed, signer.public_key)
    assert (
        str(caught.value)
        == "signed payload is not a DesiredState: Expected `int`, got `str` - at `$.revision`"
    )
