"""Secrets at rest at the origin, without HTTP: encrypted per row, listed without values, sealed
once per node and revision, pinned node keys."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from edge.control.messages import NodeInfo
from edge.control.sealing import NodeKey, open_secrets
from edge.control.signing import Signer
from edge.origin.store import SecretRecord, Store
from edge.origin.vault import Secrets, SecretsRefused, Vault


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = Store(tmp_path / "origin.db")
    yield opened
    opened.close()


@pytest.fixture
def secrets(store: Store, tmp_path: Path) -> Secrets:
    vault = Vault.load_or_create(tmp_path / "secrets-key")
    return Secrets(store, vault, Signer.generate(tmp_path / "signing.pem"), store.bump, lambda: 1000.0)


def _info(node_id: str, public_key: str = "") -> NodeInfo:
    return NodeInfo(
        node_id=node_id,
        hostname="h",
        arch="x86_64",
        python="3.13",
        cpus=1,
        memory_bytes=1,
        public_key=public_key,
    )


def test_values_are_encrypted_per_row(secrets: Secrets, store: Store) -> None:
    changed = secrets.set("hello", "API_KEY", b"s3cret", env=["API_KEY", "OTHER"])
    assert (changed.revision, changed.size, changed.overrides_env) == (1, 6, True)
    [record] = store.secrets("hello")
    assert b"s3cret" not in record.sealed
    assert secrets.vault.decrypt(record) == "s3cret"
    # The row's function and key are bound in: a value copied onto another key does not decrypt.
    moved = msgspec.structs.replace(record, key="OTHER")
    with pytest.raises(ValueError, match=r"^secret OTHER of function hello does not decrypt"):
        secrets.vault.decrypt(moved)


def test_listing_has_no_values_and_names_nodes_without_a_key(secrets: Secrets, store: Store) -> None:
    secrets.set("hello", "B_KEY", b"two")
    secrets.set("hello", "A_KEY", b"one")
    store.put_node(_info("old"), 1.0)
    listing = secrets.listing("hello")
    assert [(s.key, s.size, s.updated_at) for s in listing.secrets] == [
        ("A_KEY", 3, 1000.0),
        ("B_KEY", 3, 1000.0),
    ]
    assert listing.nodes_without_key == ["old"]
    assert b"one" not in msgspec.json.encode(listing)
    assert secrets.names() == {"hello": ["A_KEY", "B_KEY"]}


def test_sealed_once_per_node_and_revision_for_its_own_key(
    secrets: Secrets, store: Store, tmp_path: Path
) -> None:
    key = NodeKey.load_or_create(tmp_path / "node-key")
    store.put_node(secrets.registering(_info("n1", key.public_key)), 1.0)
    secrets.set("hello", "API_KEY", b"s3cret")
    secrets.set("gone", "API_KEY", b"not deployed")
    revision = store.revision()
    sealed = secrets.sealed_for("n1", revision, ["hello"])
    assert sealed is not None
    assert secrets.sealed_for("n1", revision, ["hello"]) is sealed
    opened = open_secrets(sealed, key, secrets.signer.public_key, revision, "n1")
    assert opened.functions == {"hello": {"API_KEY": "s3cret"}}  # only functions in the state
    assert secrets.sealed_for("unknown", revision, ["hello"]) is None


def test_a_registered_key_is_pinned(secrets: Secrets, store: Store, tmp_path: Path) -> None:
    first = NodeKey.load_or_create(tmp_path / "first").public_key
    second = NodeKey.load_or_create(tmp_path / "second").public_key
    store.put_node(secrets.registering(_info("n1")), 1.0)  # registered before it had a key
    store.put_node(secrets.registering(_info("n1", first)), 2.0)
    assert secrets.registering(_info("n1")).public_key == first
    with pytest.raises(SecretsRefused) as caught:
        secrets.registering(_info("n1", second))
    assert caught.value.status == 409
    assert secrets.forget_key("n1").public_key == first
    assert secrets.registering(_info("n1", second)).public_key == second
    with pytest.raises(SecretsRefused, match=r"^request body: `\$.public_key`: Expected 32 raw bytes"):
        secrets.registering(_info("n2", base64.b64encode(b"short").decode()))


def test_limits_and_removal(secrets: Secrets, store: Store) -> None:
    for n in range(100):
        secrets.set("hello", f"K{n}", b"v")
    with pytest.raises(SecretsRefused, match=r"^function hello has 100 secrets, the most it may have;"):
        secrets.set("hello", "ONE_MORE", b"v")
    secrets.set("hello", "K0", b"replaced")  # replacing one is not adding one
    assert secrets.remove("hello", "K0").removed
    with pytest.raises(SecretsRefused, match=r"^secret K1: Expected no NUL character"):
        secrets.set("hello", "K1", b"a\0b")
    with store.transaction():
        store.delete_function("hello")
    assert store.secrets("hello") == []


def test_the_at_rest_key_is_kept_and_checked(tmp_path: Path) -> None:
    path = tmp_path / "secrets-key"
    vault = Vault.load_or_create(path)
    assert path.stat().st_mode & 0o777 == 0o600
    sealed = vault.encrypt("hello", "K", b"v")
    record = SecretRecord(function="hello", key="K", sealed=sealed, size=1, updated_at=0.0)
    assert Vault.load_or_create(path).decrypt(record) == "v"
    path.write_text("garbage\n")
    with pytest.raises(ValueError, match=rf"^{path}: Expected base64 of 32 bytes"):
        Vault.load_or_create(path)
