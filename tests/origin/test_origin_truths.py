"""The origin's service in-process (no HTTP): who owns a route two functions claim, and which node
failed which version."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge.control.messages import FunctionStatus, NodeInfo, NodeReport
from edge.control.signing import Signer
from edge.origin.blobs import BlobStore
from edge.origin.service import ApiError, Origin, claimed_routes
from edge.origin.settings import OriginSettings
from edge.origin.store import Store
from edge.origin.vault import Vault
from isolates.manifest import Manifest


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


@pytest.fixture
def origin(tmp_path: Path) -> Iterator[Origin]:
    store = Store(tmp_path / "origin.db")
    blobs = BlobStore(tmp_path / "blobs")
    try:
        signer = Signer(Ed25519PrivateKey.generate())
        vault = Vault.load_or_create(tmp_path / "secrets-key")
        yield Origin(OriginSettings(), store, blobs, signer, Clock(), vault)
    finally:
        store.close()


def _deploy(origin: Origin, name: str, version: str, routes: list[str], force: bool = False) -> list[str]:
    manifest = Manifest(name=name, routes=routes)
    return origin.deploy(name, version * 64, 10, manifest, None, force=force).took


def _routes(origin: Origin) -> dict[str, list[str]]:
    return {function.name: function.routes for function in origin.desired_state().functions}


def test_claimed_routes_are_the_name_and_the_manifest_routes() -> None:
    assert claimed_routes("hi", Manifest(name="hi", routes=["/api/", "/hi"])) == {
        "/api": "its `routes` in edge.toml",
        "/hi": "its `routes` in edge.toml",
    }
    assert claimed_routes("hi", Manifest(name="hi")) == {"/hi": "its own name"}


def test_a_route_claimed_twice_is_refused_then_owned_by_the_newest_forced_deploy(origin: Origin) -> None:
    assert _deploy(origin, "a", "a", ["/shared"]) == []

    with pytest.raises(ApiError) as refused:
        _deploy(origin, "b", "b", ["/shared/", "/b-only"])

    assert (refused.value.status, refused.value.message) == (
        409,
        "/shared is claimed by `b` by its `routes` in edge.toml and by `a` by its `routes` in edge.toml:"
        " change `routes` in edge.toml, or deploy with --force to let `b` take the route from the"
        " function deployed before it",
    )
    assert origin.store.function("b") is None
    assert _deploy(origin, "b", "b", ["/shared/", "/b-only"], force=True) == [
        "/shared from `a` by its `routes` in edge.toml"
    ]
    assert _routes(origin) == {"a": [], "b": ["/shared/", "/b-only"]}
    # A newer forced upload of `a` takes the route back.
    _deploy(origin, "a", "c", ["/shared"], force=True)
    assert _routes(origin) == {"a": ["/shared"], "b": ["/b-only"]}


def test_failures_are_kept_per_node_until_it_serves_the_version(origin: Origin) -> None:
    _deploy(origin, "a", "1", [])
    _deploy(origin, "a", "2", [])
    v1, v2 = "1" * 64, "2" * 64
    for node_id in ("n2", "n1"):
        info = NodeInfo(node_id=node_id, hostname="h", arch="x", python="3", cpus=1, memory_bytes=1)
        origin.register(info)
    broken = FunctionStatus(name="a", versions=[v2], state="error", error="ImportError: x")
    for node_id in ("n2", "n1"):
        origin.seen(node_id, NodeReport(node_id=node_id, applied_revision=2, functions=[broken]))
    assert origin.functions()[0].failed == {v2: ["n1", "n2"]}
    assert [(v.version, v.failed_on) for v in origin.function("a").versions] == [(v2, ["n1", "n2"]), (v1, [])]

    # A report of the same node without the error (another version serving) keeps the record.
    serving = FunctionStatus(name="a", versions=[v1])
    origin.seen("n1", NodeReport(node_id="n1", applied_revision=3, functions=[serving]))
    assert origin.functions()[0].failed == {v2: ["n1", "n2"]}
    # That version serving there clears it for that node.
    origin.seen(
        "n1",
        NodeReport(node_id="n1", applied_revision=4, functions=[FunctionStatus(name="a", versions=[v2])]),
    )
    assert origin.functions()[0].failed == {v2: ["n2"]}
    origin.remove("a")
    assert origin.store.failures() == {}
