"""The pure release rules: deploy, canary, promote, rollback, prune, resolve."""

from __future__ import annotations

import pytest

from edge.control.messages import Release
from edge.origin.releases import (
    AmbiguousVersion,
    ReleaseError,
    Track,
    UnknownVersion,
    deploy,
    promote,
    prune,
    resolve,
    rollback,
)


def _r(*pairs: tuple[str, int]) -> list[Release]:
    return [Release(version=v, weight=w) for v, w in pairs]


def test_deploy_canary_promote_rollback() -> None:
    track = deploy(Track(name="f"), "v1")
    assert (track.releases, track.history) == (_r(("v1", 100)), ["v1"])
    track = deploy(track, "v2", canary=5)
    assert (track.releases, track.history) == (_r(("v1", 95), ("v2", 5)), ["v1"])
    assert promote(track).releases == _r(("v2", 100))
    assert rollback(track).releases == _r(("v1", 100))
    track = promote(track)
    assert track.history == ["v1", "v2"]
    back = rollback(track)
    assert (back.releases, back.history) == (_r(("v1", 100)), ["v1"])
    to = rollback(back, "v2")
    assert (to.releases, to.history) == (_r(("v2", 100)), ["v1", "v2"])
    assert deploy(track, "v3", canary=100).releases == _r(("v3", 100))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda: deploy(Track(name="f"), "v1", canary=10),
            "cannot canary the first version of `f`: there is no current version",
        ),
        (
            lambda: deploy(deploy(Track(name="f"), "v1"), "v1", canary=10),
            "version v1 is already the current version of `f`",
        ),
        (
            lambda: deploy(deploy(Track(name="f"), "v1"), "v2", canary=0),
            "canary: Expected a percentage from 1 to 100, got 0",
        ),
        (lambda: promote(deploy(Track(name="f"), "v1")), "`f` has no canary to promote"),
        (lambda: rollback(deploy(Track(name="f"), "v1")), "`f` has no previous version to roll back to"),
        (
            lambda: rollback(deploy(Track(name="f"), "v1"), "v1"),
            "version v1 is already the current version of `f`",
        ),
    ],
)
def test_refusals(change: object, message: str) -> None:
    with pytest.raises(ReleaseError) as caught:
        change()  # type: ignore[operator]
    assert str(caught.value) == message


def test_prune_keeps_newest_and_live() -> None:
    track = Track(name="f", releases=_r(("v1", 90), ("v4", 10)), history=["v0", "v1"])
    pruned, dropped = prune(track, ["v4", "v3", "v2", "v1", "v0"], keep=2)
    assert dropped == ["v2", "v0"]
    assert pruned.history == ["v1"]


def test_resolve() -> None:
    versions = ["abc1", "abd2", "ffff"]
    assert resolve("f", "ff", versions) == "ffff"
    assert resolve("f", "ABC", versions) == "abc1"
    with pytest.raises(AmbiguousVersion) as caught:
        resolve("f", "ab", versions)
    assert str(caught.value) == "version prefix 'ab' of `f` is ambiguous: it matches abc1, abd2"
    with pytest.raises(UnknownVersion) as caught:
        resolve("f", "", versions)
    assert str(caught.value) == "`f` has no version ''; see `edge versions f`"
