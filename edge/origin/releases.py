"""Release rules as pure functions: deploy, canary, promote, rollback and which versions to prune."""

from __future__ import annotations

import msgspec

from edge.control.messages import Release

__all__ = [
    "AmbiguousVersion",
    "ReleaseError",
    "Track",
    "UnknownVersion",
    "deploy",
    "live_versions",
    "promote",
    "prune",
    "resolve",
    "rollback",
]


class ReleaseError(ValueError):
    """A release change that does not make sense for the function's current releases."""


class UnknownVersion(ReleaseError):
    """A version (prefix) that matches no kept version."""


class AmbiguousVersion(ReleaseError):
    """A version prefix that matches more than one kept version."""


class Track(msgspec.Struct, kw_only=True):
    """A function's live releases (first is stable) and the stack of versions that were stable."""

    name: str
    releases: list[Release] = []
    history: list[str] = []

    @property
    def stable(self) -> str | None:
        """The version serving the stable share, or None before the first deploy."""
        return self.releases[0].version if self.releases else None

    @property
    def canary(self) -> Release | None:
        """The canary release while one is in progress."""
        return self.releases[1] if len(self.releases) > 1 else None


def _push(history: list[str], version: str) -> list[str]:
    return history if history and history[-1] == version else [*history, version]


def deploy(track: Track, version: str, canary: int | None = None) -> Track:
    """`version` takes all traffic, or `canary` percent (1-99) beside the stable version."""
    if canary is None or canary == 100:
        return Track(
            name=track.name,
            releases=[Release(version=version, weight=100)],
            history=_push(track.history, version),
        )
    if not 1 <= canary <= 99:
        raise ReleaseError(f"canary: Expected a percentage from 1 to 100, got {canary!r}")
    stable = track.stable
    if stable is None:
        raise ReleaseError(f"cannot canary the first version of `{track.name}`: there is no current version")
    if stable == version:
        raise ReleaseError(f"version {version[:12]} is already the current version of `{track.name}`")
    releases = [Release(version=stable, weight=100 - canary), Release(version=version, weight=canary)]
    return Track(name=track.name, releases=releases, history=track.history)


def promote(track: Track) -> Track:
    """The canary takes all traffic."""
    canary = track.canary
    if canary is None:
        raise ReleaseError(f"`{track.name}` has no canary to promote")
    return deploy(track, canary.version)


def rollback(track: Track, to: str | None = None) -> Track:
    """Drop the canary, else go back to the previous stable version; or switch to `to`."""
    if to is not None:
        if track.canary is None and track.stable == to:
            raise ReleaseError(f"version {to[:12]} is already the current version of `{track.name}`")
        return deploy(track, to)
    if track.canary is not None:
        stable = track.releases[0].version
        return Track(name=track.name, releases=[Release(version=stable, weight=100)], history=track.history)
    if len(track.history) < 2:
        raise ReleaseError(f"`{track.name}` has no previous version to roll back to")
    history = track.history[:-1]
    return Track(name=track.name, releases=[Release(version=history[-1], weight=100)], history=history)


def live_versions(track: Track) -> set[str]:
    """The versions that serve traffic now."""
    return {release.version for release in track.releases}


def prune(track: Track, newest_first: list[str], keep: int) -> tuple[Track, list[str]]:
    """Keep the newest `keep` versions and every live one; returns the track and the dropped versions."""
    live = live_versions(track)
    kept = set(newest_first[:keep]) | live
    dropped = [version for version in newest_first if version not in kept]
    history: list[str] = []
    for version in track.history:
        if version in kept:
            history = _push(history, version)
    return Track(name=track.name, releases=track.releases, history=history), dropped


def resolve(name: str, prefix: str, versions: list[str]) -> str:
    """The one version starting with `prefix`; raises ReleaseError when none or several match."""
    matches = [version for version in versions if version.startswith(prefix.lower())]
    if not prefix or not matches:
        raise UnknownVersion(f"`{name}` has no version {prefix!r}; see `edge versions {name}`")
    if len(matches) > 1:
        shown = ", ".join(version[:12] for version in matches)
        raise AmbiguousVersion(f"version prefix {prefix!r} of `{name}` is ambiguous: it matches {shown}")
    return matches[0]
