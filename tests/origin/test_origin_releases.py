"""Deploy, canary, promote, rollback, rm, pruning and purges, seen in the signed desired state."""

from __future__ import annotations

from pathlib import Path

import pytest
from origin_harness import Origin, running_origin, write_function

from edge import bundle
from edge.control.client import OriginClient, OriginError
from edge.control.messages import DesiredState, FunctionState, PurgeOrder, Release
from edge.control.signing import open_state


def _state(client: OriginClient) -> DesiredState:
    signed = client.sync(0, "", 0)
    assert signed is not None
    return open_state(signed, client.key())


def _function(client: OriginClient, name: str) -> FunctionState | None:
    return next((f for f in _state(client).functions if f.name == name), None)


def _version(tmp_path: Path, name: str, n: int) -> bytes:
    return bundle.pack(
        write_function(
            tmp_path / f"{name}-{n}" / name,
            main=f"VERSION = {n}\n\n\ndef handler(request):\n    return VERSION\n",
        )
    )


def test_deploy_then_replace(origin: Origin, tmp_path: Path) -> None:
    client = origin.admin()
    manifest = 'routes = ["/shop"]\ntimeout_ms = 500\nenv = { MODE = "prod" }\n[cache]\nttl = 30\n'
    first = bundle.pack(write_function(tmp_path / "shop", manifest=manifest))
    result = client.deploy("shop", first)
    v1 = bundle.digest(first)
    assert (result.name, result.version, result.releases) == ("shop", v1, [Release(version=v1, weight=100)])
    assert result.revision == client.health().revision
    assert _function(client, "shop") == FunctionState(
        name="shop",
        routes=["/shop"],
        timeout_ms=500,
        env={"MODE": "prod"},
        cache_ttl=30,
        releases=[Release(version=v1, weight=100)],
    )
    assert client.blob(v1) == first

    second = _version(tmp_path, "shop", 2)
    result = client.deploy("shop", second)
    v2 = bundle.digest(second)
    assert result.releases == [Release(version=v2, weight=100)]
    state = _function(client, "shop")
    assert state is not None and state.releases == [Release(version=v2, weight=100)]
    assert state.routes == []  # the config comes from the stable version's manifest
    assert [v.version for v in client.function("shop").versions] == [v2, v1]


def test_canary_promote_rollback(origin: Origin, tmp_path: Path) -> None:
    client = origin.admin()
    v1, v2, v3 = (_version(tmp_path, "canary", n) for n in (1, 2, 3))
    d1, d2, d3 = (bundle.digest(v) for v in (v1, v2, v3))
    with pytest.raises(OriginError) as caught:
        client.deploy("canary", v1, canary=10)
    assert str(caught.value) == (
        "409 conflict: cannot canary the first version of `canary`: there is no current version"
    )
    client.deploy("canary", v1)
    result = client.deploy("canary", v2, canary=10)
    split = [Release(version=d1, weight=90), Release(version=d2, weight=10)]
    assert result.releases == split
    state = _function(client, "canary")
    assert state is not None and state.releases == split

    assert client.promote("canary").releases == [Release(version=d2, weight=100)]
    with pytest.raises(OriginError) as caught:
        client.promote("canary")
    assert str(caught.value) == "409 conflict: `canary` has no canary to promote"

    client.deploy("canary", v3, canary=25)
    assert client.rollback("canary").releases == [Release(version=d2, weight=100)]  # drops the canary
    assert client.rollback("canary").releases == [Release(version=d1, weight=100)]  # previous version
    with pytest.raises(OriginError) as caught:
        client.rollback("canary")
    assert str(caught.value) == "409 conflict: `canary` has no previous version to roll back to"

    assert client.rollback("canary", to=d3[:8]).releases == [Release(version=d3, weight=100)]
    state = _function(client, "canary")
    assert state is not None and state.releases == [Release(version=d3, weight=100)]
    with pytest.raises(OriginError) as caught:
        client.rollback("canary", to="ffffffffff")
    assert (
        str(caught.value) == "404 not found: `canary` has no version 'ffffffffff'; see `edge versions canary`"
    )


def test_rollback_to_an_ambiguous_prefix(origin: Origin, tmp_path: Path) -> None:
    client = origin.admin()
    for n in range(1, 20):
        client.deploy("ambiguous", _version(tmp_path, "ambiguous", n))
    digests = [v.version for v in client.function("ambiguous").versions]
    firsts = [d[0] for d in digests]
    prefix = next(c for c in firsts if firsts.count(c) > 1)
    matches = ", ".join(d[:12] for d in digests if d.startswith(prefix))
    with pytest.raises(OriginError) as caught:
        client.rollback("ambiguous", to=prefix)
    assert str(caught.value) == (
        f"400 bad request: version prefix '{prefix}' of `ambiguous` is ambiguous: it matches {matches}"
    )


def test_remove(origin: Origin, tmp_path: Path) -> None:
    client = origin.admin()
    data = _version(tmp_path, "gone", 1)
    client.deploy("gone", data)
    before = client.health().revision
    removed = client.remove("gone")
    assert (removed.name, removed.revision) == ("gone", before + 1)
    assert _function(client, "gone") is None
    assert "gone" not in [f.name for f in client.functions()]
    with pytest.raises(OriginError) as caught:
        client.blob(bundle.digest(data))
    assert caught.value.status == 404
    with pytest.raises(OriginError) as caught:
        client.remove("gone")
    assert str(caught.value) == "404 not found: no function named `gone`"


def test_purge_orders_are_in_the_state(origin: Origin, tmp_path: Path) -> None:
    client = origin.admin()
    client.deploy("purgeable", _version(tmp_path, "purgeable", 1))
    first = client.purge("purgeable", "tag", "products")
    second = client.purge("purgeable", "all")
    assert second.id > first.id and second.revision == first.revision + 1
    purges = _state(client).purges
    assert PurgeOrder(id=first.id, function="purgeable", kind="tag", value="products") in purges
    assert PurgeOrder(id=second.id, function="purgeable", kind="all", value="") in purges
    with pytest.raises(OriginError) as caught:
        client.purge("purgeable", "path", "no-slash")
    assert str(caught.value) == (
        "400 bad request: purge: Expected a path starting with '/', got 'no-slash' - at `$.value`"
    )
    with pytest.raises(OriginError) as caught:
        client.purge("nobody", "all")
    assert str(caught.value) == "404 not found: no function named `nobody`"


def test_old_versions_are_pruned_but_live_ones_kept(tmp_path: Path) -> None:
    with running_origin(tmp_path / "data", "--keep-versions", "2") as origin:
        client = origin.admin()
        data = [_version(tmp_path, "pruned", n) for n in range(1, 5)]
        digests = [bundle.digest(d) for d in data]
        client.deploy("pruned", data[0])
        client.deploy("pruned", data[1])
        client.deploy("pruned", data[2], canary=50)
        client.deploy("pruned", data[3], canary=50)  # replaces the canary; v2 stays live
        kept = [v.version for v in client.function("pruned").versions]
        assert kept == [digests[3], digests[2], digests[1]]
        blobs = {p.name for p in (origin.data / "blobs").glob("??/*")}
        assert blobs == set(kept)
