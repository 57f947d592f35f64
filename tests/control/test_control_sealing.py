"""Sealed secrets without sockets: only the node's key opens them, only the origin's key signs
them, and an envelope is bound to its node id and revision."""

from __future__ import annotations

import base64
from pathlib import Path

import msgspec
import pytest

from edge.control.messages import NodeSecrets, SealedSecrets
from edge.control.sealing import NodeKey, SealError, open_secrets, seal_secrets
from edge.control.signing import SignatureError, Signer

SECRETS = NodeSecrets(node_id="n1", revision=7, functions={"hello": {"API_KEY": "s3cret"}})


@pytest.fixture
def signer(tmp_path: Path) -> Signer:
    return Signer.generate(tmp_path / "signing-key.pem")


@pytest.fixture
def key(tmp_path: Path) -> NodeKey:
    return NodeKey.load_or_create(tmp_path / "node-key")


def test_round_trip_and_nothing_in_the_clear(signer: Signer, key: NodeKey) -> None:
    sealed = seal_secrets(SECRETS, key.public_key, signer)
    assert b"s3cret" not in msgspec.json.encode(sealed)
    assert open_secrets(sealed, key, signer.public_key, 7, "n1") == SECRETS
    assert open_secrets(sealed, key, signer.public_key, 7, None) == SECRETS


def test_another_node_cannot_open_them(signer: Signer, key: NodeKey, tmp_path: Path) -> None:
    sealed = seal_secrets(SECRETS, key.public_key, signer)
    other = NodeKey.load_or_create(tmp_path / "other-key")
    with pytest.raises(SealError, match=r"^sealed secrets: the box does not open with this node's key$"):
        open_secrets(sealed, other, signer.public_key, 7, "n1")


def test_only_the_pinned_origin_key_is_trusted(signer: Signer, key: NodeKey, tmp_path: Path) -> None:
    # Anyone who knows the node's public key can seal a box to it: the signature is what counts.
    forger = Signer.generate(tmp_path / "forger.pem")
    forged = seal_secrets(SECRETS, key.public_key, forger)
    with pytest.raises(SignatureError, match=r"^signature does not match the payload and key$"):
        open_secrets(forged, key, signer.public_key, 7, "n1")
    genuine = seal_secrets(SECRETS, key.public_key, signer)
    swapped = SealedSecrets(node_id="n1", box=forged.box, signature=genuine.signature)
    with pytest.raises(SignatureError):
        open_secrets(swapped, key, signer.public_key, 7, "n1")


def test_an_envelope_is_bound_to_its_revision_and_node(signer: Signer, key: NodeKey) -> None:
    sealed = seal_secrets(SECRETS, key.public_key, signer)
    with pytest.raises(
        SealError, match=r"^sealed secrets: Expected revision 8 \(the signed state's\), got 7$"
    ):
        open_secrets(sealed, key, signer.public_key, 8, "n1")
    with pytest.raises(SealError, match=r"^sealed secrets: Expected node id 'n2', got 'n1'$"):
        open_secrets(sealed, key, signer.public_key, 7, "n2")


def test_the_node_key_file_is_made_once_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "node-key"
    first = NodeKey.load_or_create(path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert NodeKey.load_or_create(path).public_key == first.public_key
    assert len(base64.b64decode(first.public_key)) == 32
    assert [p.name for p in tmp_path.iterdir()] == ["node-key"]  # no temporary file left


def test_a_damaged_node_key_file_is_named_with_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "node-key"
    path.write_text(base64.b64encode(b"short").decode() + "\n")
    with pytest.raises(SealError) as caught:
        NodeKey.load_or_create(path)
    assert str(caught.value) == (
        f"{path}: Expected base64 of a 32-byte X25519 private key, got 5 bytes; move the file away and"
        " restart the node to make a new key (then an admin runs `edge secret forget-node NODE_ID` so"
        " the origin accepts it)"
    )
    path.write_text("not base64!\n")
    with pytest.raises(SealError, match=rf"^{path}: Expected base64, got 'not base64!'$"):
        NodeKey.load_or_create(path)
