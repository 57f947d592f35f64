"""The origin's behaviour apart from HTTP: releases, desired state, nodes, purges, long-poll wake-ups."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import msgspec

from edge.control.admin import (
    FunctionDetail,
    FunctionInfo,
    NodesList,
    NodeStatus,
    PurgeRequest,
    PurgeResult,
    ReleaseResult,
    Removed,
    VersionInfo,
)
from edge.control.messages import (
    DesiredState,
    FunctionState,
    NodeInfo,
    NodeReport,
    Registered,
    SignedState,
)
from edge.control.signing import Signer, seal_state
from edge.origin import releases
from edge.origin.blobs import Blobs
from edge.origin.metadata import MetadataStore
from edge.origin.releases import ReleaseError, Track
from edge.origin.settings import OriginSettings
from edge.origin.store import FunctionRecord, VersionRecord
from edge.origin.vault import Secrets, SecretsRefused, Vault
from isolates.manifest import Manifest

__all__ = ["ApiError", "Clock", "Origin", "claimed_routes"]

Clock = Callable[[], float]


def _route(prefix: str) -> str:
    """A route as the node's router compares them (no trailing slash)."""
    return prefix.rstrip("/") or "/"


def claimed_routes(name: str, manifest: Manifest) -> dict[str, str]:
    """Every route a function takes -> how it takes it: its implicit `/<name>` and its `routes`."""
    claims = {_route(route): "its `routes` in edge.toml" for route in manifest.routes}
    claims.setdefault(f"/{name}", "its own name")
    return claims


class ApiError(Exception):
    """A request the origin refuses; `status` is the HTTP status, the message goes into `error`."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Origin:
    """One origin: the store, the blobs and the signer, plus the wake-up for long polls."""

    def __init__(
        self,
        settings: OriginSettings,
        store: MetadataStore,
        blobs: Blobs,
        signer: Signer,
        clock: Clock,
        vault: Vault,
    ) -> None:
        self.settings = settings
        self.store = store
        self.blobs = blobs
        self.signer = signer
        self.clock = clock
        self._changed = asyncio.Event()
        self._sealed: SignedState | None = None
        self._sealed_revision = -1
        self.secrets = Secrets(store, vault, signer, self._bumped, clock)

    @property
    def revision(self) -> int:
        """The current global revision."""
        return self.store.revision()

    def _bumped(self) -> int:
        """Call inside a transaction after a change: bump the revision and wake the long polls."""
        revision = self.store.bump()
        self.wake()
        return revision

    def wake(self) -> None:
        """Wake every long poll to look at the revision again (on the event loop's thread; another
        origin's bump arrives here through `MetadataStore.listen`)."""
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_newer(self, revision: int, timeout: float) -> bool:
        """Wait up to `timeout` seconds until the revision is above `revision`; True if it is."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.revision <= revision:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                return self.revision > revision
        return True

    # Desired state.

    def desired_state(self) -> DesiredState:
        """Every function with its config and releases, and the kept purge orders."""
        manifests = {}
        for record in self.store.functions():
            stable = self.store.version(record.name, record.releases[0].version)
            manifests[record.name] = stable.manifest if stable is not None else Manifest(name=record.name)
        # A route two functions claim (a forced deploy) belongs to the one deployed last; nodes
        # let `routes` win over an implicit `/<name>`, so only `routes` need dropping here.
        deployed = self.store.last_deploys()
        owners: dict[str, tuple[float, str]] = {}
        for name, manifest in manifests.items():
            for route in claimed_routes(name, manifest):
                owners[route] = max(owners.get(route, (-1.0, "")), (deployed.get(name, 0.0), name))
        functions = []
        keysets = self.store.jwks()
        secrets = self.secrets.names()
        for record in self.store.functions():
            manifest = manifests[record.name]
            urls = self._jwks_urls(record)
            functions.append(
                FunctionState(
                    name=record.name,
                    routes=[r for r in manifest.routes if owners[_route(r)][1] == record.name],
                    timeout_ms=manifest.timeout_ms,
                    env=manifest.env,
                    cache_ttl=manifest.cache.ttl,
                    releases=record.releases,
                    jwks={url: keysets[url] for url in urls if url in keysets},
                    secrets=secrets.get(record.name, []),
                )
            )
        return DesiredState(
            revision=self.revision, issued_at=self.clock(), functions=functions, purges=self.store.purges()
        )

    def _jwks_urls(self, record: FunctionRecord) -> set[str]:
        """The `[auth] jwks_url` of every version the function releases."""
        urls = set()
        for release in record.releases:
            version = self.store.version(record.name, release.version)
            auth = version.manifest.auth if version is not None else None
            if auth is not None and auth.jwks_url:
                urls.add(auth.jwks_url)
        return urls

    def jwks_urls(self) -> set[str]:
        """Every `[auth] jwks_url` some released version names (edge/origin/keysets.py refreshes them)."""
        return {url for record in self.store.functions() for url in self._jwks_urls(record)}

    def update_jwks(self, url: str, body: str) -> bool:
        """Store a key set fetched again; True (and a new revision) when it changed."""
        with self.store.transaction():
            if self.store.jwks().get(url) == body:
                return False
            self.store.put_jwks(url, body, self.clock())
            self._bumped()
        return True

    def signed_state(self, node_id: str | None = None) -> SignedState:
        """The signed desired state of the current revision (built once per revision); for a node
        id, with that node's secrets sealed to its registered key."""
        revision = self.revision
        if self._sealed is None or self._sealed_revision != revision:
            self._sealed = seal_state(self.desired_state(), self.signer)
            self._sealed_revision = revision
        if node_id is None:
            return self._sealed
        names = [record.name for record in self.store.functions()]
        sealed = self.secrets.sealed_for(node_id, revision, names)
        return self._sealed if sealed is None else msgspec.structs.replace(self._sealed, secrets=sealed)

    def env_keys(self, name: str) -> list[str]:
        """The [env] keys of a function's stable version (none when it is not deployed)."""
        record = self.store.function(name)
        stable = self.store.version(name, record.releases[0].version) if record and record.releases else None
        return list(stable.manifest.env) if stable is not None else []

    # Functions and releases.

    def _record(self, name: str) -> FunctionRecord:
        record = self.store.function(name)
        if record is None:
            raise ApiError(404, f"no function named `{name}`")
        return record

    def _save(self, record: FunctionRecord, track: Track, version: str) -> ReleaseResult:
        """Store a changed track (pruning old versions), bump the revision; inside a transaction."""
        newest = [v.version for v in self.store.versions(record.name)]
        track, dropped = releases.prune(track, newest, self.settings.keep_versions)
        self.store.delete_versions(record.name, dropped)
        record.releases, record.history, record.updated_at = track.releases, track.history, self.clock()
        self.store.put_function(record)
        revision = self._bumped()
        return ReleaseResult(name=record.name, version=version, revision=revision, releases=track.releases)

    def _change(
        self, name: str, change: Callable[[Track], Track], version: str | None = None
    ) -> ReleaseResult:
        with self.store.transaction():
            record = self._record(name)
            track = Track(name=name, releases=record.releases, history=record.history)
            try:
                track = change(track)
            except ReleaseError as exc:
                raise ApiError(409, str(exc)) from None
            result = self._save(record, track, version or track.releases[-1].version)
        self.collect_blobs()
        return result

    def _route_conflicts(self, name: str, manifest: Manifest) -> list[tuple[str, str]]:
        """(route, who else claims it and how) for each route of `manifest` another function claims."""
        wanted = claimed_routes(name, manifest)
        conflicts = []
        for record in self.store.functions():
            if record.name == name:
                continue
            stable = self.store.version(record.name, record.releases[0].version)
            theirs = claimed_routes(record.name, stable.manifest if stable else Manifest(name=record.name))
            for route in sorted(wanted.keys() & theirs.keys()):
                conflicts.append((route, f"`{record.name}` by {theirs[route]}"))
        return conflicts

    def deploy(
        self,
        name: str,
        version: str,
        size: int,
        manifest: Manifest,
        canary: int | None,
        force: bool = False,
        jwks: tuple[str, str] | None = None,
    ) -> ReleaseResult:
        """Record an uploaded (already stored and validated) version and release it.

        A route another function claims too is refused (409) unless `force`: then this deploy,
        the newest, takes it, and the result says so in `took`.
        """
        now = self.clock()
        with self.store.transaction():
            conflicts = self._route_conflicts(name, manifest)
            if conflicts and not force:
                claims = claimed_routes(name, manifest)
                shown = "; ".join(
                    f"{route} is claimed by `{name}` by {claims[route]} and by {other}"
                    for route, other in conflicts
                )
                raise ApiError(
                    409,
                    f"{shown}: change `routes` in edge.toml, or deploy with --force to let `{name}`"
                    " take the route from the function deployed before it",
                )
            record = self.store.function(name) or FunctionRecord(
                name=name, releases=[], history=[], created_at=now, updated_at=now
            )
            track = Track(name=name, releases=record.releases, history=record.history)
            try:
                track = releases.deploy(track, version, canary)
            except ReleaseError as exc:
                raise ApiError(409, str(exc)) from None
            self.store.put_version(
                VersionRecord(name=name, version=version, created_at=now, size=size, manifest=manifest)
            )
            if jwks is not None:  # (jwks_url, the key set fetched at upload)
                self.store.put_jwks(*jwks, now)
            result = self._save(record, track, version)
        result.took = [f"{route} from {other}" for route, other in conflicts]
        self.collect_blobs()
        return result

    def promote(self, name: str) -> ReleaseResult:
        """The canary takes all traffic."""
        return self._change(name, releases.promote)

    def rollback(self, name: str, to: str | None) -> ReleaseResult:
        """Back to the previous version, or to the version `to` names."""
        target = None
        if to is not None:
            versions = [v.version for v in self.store.versions(self._record(name).name)]
            try:
                target = releases.resolve(name, to, versions)
            except releases.UnknownVersion as exc:
                raise ApiError(404, str(exc)) from None
            except releases.AmbiguousVersion as exc:
                raise ApiError(400, str(exc)) from None
        result = self._change(name, lambda track: releases.rollback(track, target))
        result.version = result.releases[0].version
        return result

    def remove(self, name: str) -> Removed:
        """Remove a function and all its versions."""
        with self.store.transaction():
            self._record(name)
            self.store.delete_function(name)
            revision = self._bumped()
        self.collect_blobs()
        return Removed(name=name, revision=revision)

    def collect_blobs(self) -> None:
        """Delete blobs no kept version refers to."""
        self.blobs.collect(self.store.referenced_blobs())

    def functions(self) -> list[FunctionInfo]:
        """`edge ls`."""
        result = []
        failures = self.store.failures()
        for record in self.store.functions():
            versions = self.store.versions(record.name)
            stable = next((v for v in versions if v.version == record.releases[0].version), None)
            result.append(
                FunctionInfo(
                    name=record.name,
                    releases=record.releases,
                    routes=stable.manifest.routes if stable else [],
                    versions=len(versions),
                    updated_at=record.updated_at,
                    failed={
                        v.version: failures[(record.name, v.version)]
                        for v in versions
                        if (record.name, v.version) in failures
                    },
                )
            )
        return result

    def function(self, name: str) -> FunctionDetail:
        """`edge versions NAME`."""
        record = self._record(name)
        weights = {release.version: release.weight for release in record.releases}
        versions = self.store.versions(name)
        failures = self.store.failures(name)
        stable = next((v for v in versions if v.version == record.releases[0].version), None)
        manifest = stable.manifest if stable else Manifest(name=name)
        return FunctionDetail(
            name=name,
            releases=record.releases,
            routes=manifest.routes,
            timeout_ms=manifest.timeout_ms,
            cache_ttl=manifest.cache.ttl,
            versions=[
                VersionInfo(
                    version=v.version,
                    created_at=v.created_at,
                    size=v.size,
                    weight=weights.get(v.version, 0),
                    failed_on=failures.get((name, v.version), []),
                )
                for v in versions
            ],
            updated_at=record.updated_at,
        )

    # Purges.

    def purge(self, name: str, request: PurgeRequest) -> PurgeResult:
        """Store a purge order for `name` and bump the revision."""
        if request.kind == "all" and request.value:
            raise ApiError(
                400, f"purge: Expected no value for kind `all`, got {request.value!r} - at `$.value`"
            )
        if request.kind in ("path", "prefix") and not request.value.startswith("/"):
            raise ApiError(
                400, f"purge: Expected a path starting with '/', got {request.value!r} - at `$.value`"
            )
        if request.kind == "tag" and not request.value:
            raise ApiError(400, "purge: Expected a non-empty tag, got '' - at `$.value`")
        now = self.clock()
        with self.store.transaction():
            self._record(name)
            order_id = self.store.add_purge(name, request.kind, request.value, now)
            self.store.prune_purges(self.settings.purge_keep, now - self.settings.purge_retention_s)
            revision = self._bumped()
        return PurgeResult(
            id=order_id, function=name, kind=request.kind, value=request.value, revision=revision
        )

    # Nodes.

    def register(self, info: NodeInfo, token_hash: str | None = None) -> Registered:
        """Store what a node sent about itself; with `token_hash`, the node belongs to that token.
        Its public key is pinned once registered (409 for another)."""
        with self.store.transaction():
            try:
                info = self.secrets.registering(info)
            except SecretsRefused as exc:
                raise ApiError(exc.status, exc.message) from None
            self.store.put_node(info, self.clock(), token_hash)
        return Registered(node_id=info.node_id, heartbeat_interval_s=self.settings.heartbeat_interval_s)

    def seen(self, node_id: str, report: NodeReport | None = None, token_hash: str | None = None) -> None:
        """A node polled or reported (with `token_hash`: the token it belongs to); raises ApiError 404
        when it never registered."""
        with self.store.transaction():
            known = self.store.touch_node(node_id, self.clock(), report, token_hash)
        if not known:
            raise ApiError(404, f"node `{node_id}` is not registered; POST /v1/nodes/register first")

    def nodes(self) -> NodesList:
        """`edge nodes`: a node is live when seen within `live_intervals` heartbeat intervals."""
        now = self.clock()
        window = self.settings.heartbeat_interval_s * self.settings.live_intervals
        return NodesList(
            now=now,
            revision=self.revision,
            heartbeat_interval_s=self.settings.heartbeat_interval_s,
            nodes=[
                NodeStatus(
                    info=node.info,
                    registered_at=node.registered_at,
                    last_seen=node.last_seen,
                    live=now - node.last_seen <= window,
                    report=node.report,
                )
                for node in self.store.nodes()
            ],
        )
