"""Functions from the origin (`edge node --origin URL`): pull, verify, warm, switch, report.

The node long-polls the origin for a newer signed desired state (docs/spec/CONTROL.md). For each
function it fetches missing bundles by digest, checks the digest, extracts them into its data
directory, warms the new versions' isolates and only then switches traffic; a version that fails
to load is not switched to. What actually serves is persisted (`applied.json`), so a node that
restarts while the origin is away serves its last-known-good functions.

Bundles on disk: `blobs/<digest>` keeps each archive as fetched (its sha256 is its name), and
`bundles/<digest>/` holds it unpacked, read-only. The first time a worker process uses an unpacked
bundle it did not unpack itself, it compares the tree with the stored archive, file by file; a tree
that differs is logged with the files that changed and unpacked again from the archive (fetched
again when the archive itself is damaged and the origin can be reached); with no good archive the
function is refused (`/_edge/ready` and the report to the origin show the error).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import random
import re
import secrets
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec

from edge.bundle import (
    BundleError,
    clear_bytecode,
    compile_bytecode,
    digest,
    extract,
    replace_tree,
    seal,
    verify_tree,
)
from edge.control.client import ControlError, OriginError, OriginUnreachable
from edge.control.failover import origin_client
from edge.control.messages import (
    DesiredState,
    FunctionState,
    FunctionStatus,
    NodeReport,
    PurgeOrder,
    SealedSecrets,
)
from edge.control.poll import Poller
from edge.control.sealing import SealError
from edge.control.signing import SignatureError, open_state
from edge.node.functions import isolate_spec, scale_policy
from edge.node.guard import build_guard
from edge.node.nodeinfo import node_info
from edge.node.secrets import MissingSecrets, NodeSecrets
from edge.node.settings import NodeSettings
from edge.node.source import NodeControl
from isolates.backends import IsolateSpec, LoadError
from isolates.instances import ScalePolicy
from isolates.manifest import ManifestError, load_manifest

__all__ = ["AppliedState", "OriginSource"]

log = logging.getLogger("edge.sync")

# Connecting to the origin (and the TLS handshake) gives up after this long and is tried again
# (after the reconnect back-off): a connect stuck in SYN retransmission (1 s, 3 s, 7 s ...) after a
# cut link heals would otherwise keep the node away from the origin for seconds more.
CONNECT_TIMEOUT_S = 1.5
# Bundles fetched from the origin at once by one node: a fleet that reconnects together after a
# heal asks for every missing bundle, and each node spreads its own fetches over this many.
BLOB_FETCHES = 2


class AppliedState(msgspec.Struct, kw_only=True):
    """What this node serves (not what it was asked to serve): its last-known-good state."""

    revision: int = 0
    purge_id: int = 0
    functions: list[FunctionState] = []
    # The functions' secrets of `revision`, sealed to this node's key: never their values.
    sealed_secrets: SealedSecrets | None = None


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `path` (created if missing): one worker of the node at a time."""
    with open(path, "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    tmp.write_bytes(data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


async def _blocking[T](function: Callable[..., T], *args: Any) -> T:
    """Run a blocking call on a daemon thread, so a long poll never holds up the worker's exit."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(ok: bool, value: Any) -> None:
        if future.done():
            return
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)

    def run() -> None:
        try:
            result = function(*args)
        except BaseException as exc:
            outcome: tuple[bool, Any] = (False, exc)
        else:
            outcome = (True, result)
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody wants the answer
            loop.call_soon_threadsafe(settle, *outcome)

    threading.Thread(target=run, name="edge-sync-call", daemon=True).start()
    return await future


class OriginSource:
    """Keeps the node's functions in step with the origin; see the module docstring."""

    def __init__(self, settings: NodeSettings, rng: random.Random | None = None) -> None:
        self.settings = settings
        self.data = Path(settings.data)
        # One origin, or several (`URL1,URL2`) that it fails over between (edge/control/failover.py).
        self.client = origin_client(
            settings.origin,
            settings.token or None,
            ca_file=settings.origin_ca or None,
            keep_alive=True,
            connect_timeout=CONNECT_TIMEOUT_S,
        )
        self._fetches = threading.BoundedSemaphore(BLOB_FETCHES)
        self.rng = rng or random.Random()
        self.node_id = ""
        self.key = ""
        self.revision = 0
        self.purge_id = 0
        self.effective: dict[str, FunctionState] = {}
        self.statuses: dict[str, FunctionStatus] = {}
        # The node-wide problem right now (sync failures); function errors live in `statuses`.
        self.sync_error = ""
        self.heartbeat = 10.0
        self._registered_event = asyncio.Event()
        self.connected = False
        self._app: NodeControl | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._registered = False
        # Unpacked bundles this process checked or unpacked itself (checked once per process).
        self._checked: set[str] = set()
        # Bundles found changed on disk and unpacked again: reported until the node restarts.
        self.tampered: list[str] = []
        # Last-known-good functions that could not load at start (e.g. a bundle that could not be
        # checked while the origin was away): tried once more when the origin first answers.
        self._retry: list[FunctionState] = []
        # (function, version) -> why it failed to load. Not imported again (nor its traceback
        # logged again) while the desired state keeps asking for it; forgotten once a revision
        # no longer lists it, so deploying it again, or restarting the node, retries it.
        self._failed: dict[tuple[str, str], str] = {}
        # The key, and the secrets held in memory (made in `start`, once the data directory exists).
        self.secrets: NodeSecrets
        # Function name -> the secrets its serving isolates were started with.
        self._running_secrets: dict[str, dict[str, str]] = {}

    # Start-up and shutdown.

    async def start(self, app: NodeControl) -> None:
        """Serve the last-known-good state at once, then sync in the background."""
        self._app = app
        (self.data / "bundles").mkdir(parents=True, exist_ok=True)
        # Every function's code: no process-isolated function (another uid) may list or read it.
        (self.data / "blobs").mkdir(mode=0o700, parents=True, exist_ok=True)
        (self.data / "blobs").chmod(0o700)
        self.node_id = self._node_id()
        self.key = self._pinned_key()
        self.secrets = NodeSecrets(self.data)
        applied = self._load_applied()
        self._hold_applied_secrets(applied)
        if applied.functions:
            log.info("serving last-known-good revision %d from %s", applied.revision, self.data)
        await asyncio.gather(*(self._apply_function(function) for function in applied.functions))
        self._retry = [function for function in applied.functions if function.name not in self.effective]
        self.revision, self.purge_id = applied.revision, applied.purge_id
        if any(function.secrets for function in self._retry):
            # Secrets it could not open: ask for the whole state again, which brings them sealed.
            self.revision = 0
        self._set_routes()
        self._tasks = [
            asyncio.get_running_loop().create_task(self._sync_forever()),
            asyncio.get_running_loop().create_task(self._report_forever()),
        ]

    async def stop(self) -> None:
        """Stop polling and reporting (a poll in flight is left to its daemon thread)."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.client.close()

    def status(self) -> dict[str, Any]:
        """For /_edge/ready."""
        return {
            "source": self.settings.origin,
            "node_id": self.node_id,
            "revision": self.revision,
            "connected": self.connected,
            "errors": self.errors,
        }

    @property
    def errors(self) -> list[str]:
        """What is wrong on this node now: a failing sync, and functions that could not switch."""
        errors = [self.sync_error] if self.sync_error else []
        errors += self.tampered
        errors += [
            f"function {status.name}: version {', '.join(v[:12] for v in status.versions)}: {status.error}"
            for status in sorted(self.statuses.values(), key=lambda status: status.name)
            if status.error
        ]
        return errors

    def _node_id(self) -> str:
        if self.settings.node_id:
            base = self.settings.node_id
        else:
            path = self.data / "node-id"
            try:
                base = path.read_text().strip()
            except FileNotFoundError:
                base = f"node-{secrets.token_hex(6)}"
                _write_atomic(path, base.encode() + b"\n")
        # Each granian worker syncs on its own; with several, each reports as its own node.
        return base if self.settings.workers == 1 else f"{base}-{os.getpid()}"

    def _pinned_key(self) -> str:
        path = self.data / "origin-key"
        if self.settings.origin_key:
            _write_atomic(path, self.settings.origin_key.encode() + b"\n")
            return self.settings.origin_key
        try:
            return path.read_text().strip()
        except FileNotFoundError:
            return ""  # trusted on first use (see _ensure_key)

    def _load_applied(self) -> AppliedState:
        path = self.data / "applied.json"
        try:
            return msgspec.json.decode(path.read_bytes(), type=AppliedState)
        except FileNotFoundError:
            return AppliedState()
        except msgspec.DecodeError as exc:
            log.error("%s: cannot use the last applied state: %s", path, exc)
            return AppliedState()

    def _hold_applied_secrets(self, applied: AppliedState) -> None:
        """Open the secrets kept with the last applied state (sealed to this node's key)."""
        try:
            values = self.secrets.open(applied.sealed_secrets, self.key, applied.revision, None)
        except (SignatureError, SealError) as exc:
            log.error(
                "%s: cannot use the sealed secrets of revision %d: %s", self.data, applied.revision, exc
            )
            return
        self.secrets.take(applied.sealed_secrets, values)

    def _save_applied(self) -> None:
        state = AppliedState(
            revision=self.revision,
            purge_id=self.purge_id,
            functions=list(self.effective.values()),
            sealed_secrets=self.secrets.sealed,
        )
        _write_atomic(self.data / "applied.json", msgspec.json.encode(state))

    # The sync loop.

    async def _ensure_key(self) -> None:
        if not self.key:
            self.key = await _blocking(self.client.key)
            _write_atomic(self.data / "origin-key", self.key.encode() + b"\n")
            log.info("pinned the origin's key %s (trust on first use)", self.key)

    async def _sync_forever(self) -> None:
        poller = Poller(rng=self.rng, revision=self.revision)
        while True:
            try:
                delay = await self._sync_once(poller)
            except asyncio.CancelledError:
                raise
            except (ControlError, SignatureError, SealError) as exc:
                self.connected = isinstance(exc, SignatureError | SealError | OriginError)
                retry = poller.on_unreachable if isinstance(exc, OriginUnreachable) else poller.on_failure
                delay = await self._sync_failed(retry, f"sync: {exc}")
            except Exception as exc:  # a bug here must not stop syncing for good
                log.exception("sync failed")
                delay = await self._sync_failed(poller.on_failure, f"sync: {type(exc).__name__}: {exc}")
            if delay:
                await asyncio.sleep(delay)

    async def _sync_failed(self, retry: Callable[[], float], message: str) -> float:
        """Record the failure, tell the origin at once when it can hear us, and back off (`retry`:
        the poller's delay for this kind of failure)."""
        if message != self.sync_error:
            log.error("%s", message)
        self.sync_error = message
        if self._registered and self.connected:
            await self.report()
        return retry()

    async def _sync_once(self, poller: Poller) -> float:
        await self._ensure_key()
        if not self._registered:
            info = await _blocking(node_info, self.node_id, self.settings.labels, self.secrets.key.public_key)
            registered = await _blocking(self.client.register, info)
            self.heartbeat = registered.heartbeat_interval_s
            self._registered = True
            self._registered_event.set()
            log.info("registered with %s as %s", self.settings.origin, self.node_id)
            await self.report()  # live in `edge nodes` at once, not after a heartbeat
        try:
            signed = await _blocking(
                self.client.sync, self.revision, self.node_id, self.settings.poll_timeout_s
            )
        except OriginError as exc:
            if exc.status == 404:  # the origin forgot us (its database was reset): register again
                self._registered = False
                return 0.0
            raise
        self.connected = True
        if signed is None:
            self._recovered()
            await self._retry_failed()
            return poller.on_unchanged()
        state = open_state(signed, self.key)
        values = self.secrets.open(signed.secrets, self.key, state.revision, self.node_id)
        self._recovered()
        if state.revision > self.revision:
            self._retry = []  # applying tries every function that does not serve
            await self.apply(state, signed.secrets, values)
        else:
            await self._retry_failed()
        return poller.on_state(state.revision)

    async def _retry_failed(self) -> None:
        """Load the last-known-good functions that failed at start once more, now the origin answers."""
        if not self._retry:
            return
        functions, self._retry = self._retry, []
        log.info("origin reachable: loading %s again", ", ".join(function.name for function in functions))
        await asyncio.gather(*(self._apply_function(function) for function in functions))
        self._set_routes()
        await self.report()

    def _recovered(self) -> None:
        if self.sync_error:
            log.info("sync works again (was: %s)", self.sync_error)
            self.sync_error = ""

    async def _report_forever(self) -> None:
        await self._registered_event.wait()
        while True:
            await asyncio.sleep(self.heartbeat)  # the interval the origin asked for
            await self.report()

    async def report(self) -> None:
        """Send a heartbeat; failures are only logged (the next one will try again)."""
        statuses = dict(self.statuses)
        pool = self._app.pool if self._app is not None and self._app.ready else None
        for name, status in statuses.items():
            function = pool.get(name) if pool is not None else None
            if function is not None and function.failing:
                # Marked failing on this node after it loaded (it kept wedging or crashing).
                statuses[name] = FunctionStatus(
                    name=name, versions=status.versions, state="failing", error=function.error
                )
        report = NodeReport(
            node_id=self.node_id,
            applied_revision=self.revision,
            applied_purge_id=self.purge_id,
            functions=sorted(statuses.values(), key=lambda status: status.name),
            errors=self.errors,
            stats=self._app.function_stats() if self._app is not None else [],
        )
        try:
            await _blocking(self.client.report, report)
        except ControlError as exc:
            log.debug("report failed: %s", exc)

    # Applying a desired state.

    async def apply(
        self,
        state: DesiredState,
        sealed: SealedSecrets | None = None,
        secrets: dict[str, dict[str, str]] | None = None,
    ) -> None:
        """Warm and switch every function that changed (code, config or secrets), drop removed
        ones, purge, persist, report. `secrets` were opened from `sealed`, which came with `state`."""
        app = self._require_app()
        wanted = {function.name: function for function in state.functions}
        asked = {(f.name, release.version) for f in state.functions for release in f.releases}
        # New secrets may be what a version that failed to load was missing: try it again.
        rotated = self.secrets.take(sealed, secrets or {})
        self._failed = {
            key: error for key, error in self._failed.items() if key in asked and key[0] not in rotated
        }
        await asyncio.gather(*(self._apply_function(function) for function in state.functions))
        for name in [name for name in (*self.effective, *self.statuses) if name not in wanted]:
            self.effective.pop(name, None)
            self.statuses.pop(name, None)
            self._running_secrets.pop(name, None)
            await app.pool.remove(name)
        serving = {version for function in app.pool.functions.values() for version in function.versions}
        for version in [version for version in app.guards if version not in serving]:
            del app.guards[version]
        for order in state.purges:
            if order.id > self.purge_id:
                self._purge(order)
                self.purge_id = order.id
        self.revision = state.revision
        self._set_routes()
        self._save_applied()
        log.info("applied revision %d (%d functions)", state.revision, len(self.effective))
        await self.report()

    async def _apply_function(self, function: FunctionState) -> None:
        current = self.effective.get(function.name)
        versions = [release.version for release in function.releases]
        try:
            secrets = self.secrets.of(function)
        except MissingSecrets as exc:
            self._failed_to_load(function, current, versions, str(exc))
            return
        if current == function and self._running_secrets.get(function.name, {}) == secrets:
            # Serving what is asked (e.g. after a rollback): an error about another version is over.
            self.statuses[function.name] = FunctionStatus(name=function.name, versions=versions)
            return
        known = [v for v in versions if (function.name, v) in self._failed]
        if known:
            error = self._failed[(function.name, known[0])]
            self._failed_to_load(function, current, known, error, log_it=False)
            return
        try:
            releases, policies = [], []
            for release in function.releases:
                spec, policy = await self._spec(function, release.version)
                releases.append((spec, release.weight))
                policies.append(policy)
            await self._require_app().pool.deploy(function.name, releases, policies)
        except (LoadError, ManifestError) as exc:
            # The version itself cannot load, wherever and whenever it is tried.
            serving = self._require_app().pool.get(function.name)
            new = [v for v in versions if serving is None or v not in serving.versions] or versions
            for version in new:
                self._failed[(function.name, version)] = str(exc)
            self._failed_to_load(function, current, new, str(exc))
            return
        except (BundleError, ControlError, OSError) as exc:
            self._failed_to_load(function, current, versions, str(exc))
            return
        self.effective[function.name] = function
        self._running_secrets[function.name] = secrets
        self._require_app().cache_ttls[function.name] = function.cache_ttl
        self.statuses[function.name] = FunctionStatus(name=function.name, versions=versions, state="serving")

    def _failed_to_load(
        self,
        function: FunctionState,
        current: FunctionState | None,
        versions: list[str],
        error: str,
        log_it: bool = True,
    ) -> None:
        """Report `versions` of `function` in error; with nothing serving, its routes answer 503."""
        if log_it:
            log.error(
                "function %s: version %s: %s", function.name, ", ".join(v[:12] for v in versions), error
            )
        self.statuses[function.name] = FunctionStatus(
            name=function.name, versions=versions, state="error", error=error
        )
        if current is None:
            # Clients get what failed, not where this node keeps its files (the log and the
            # report to the origin keep the full text).
            self._require_app().pool.fail(
                function.name, f"function {function.name} failed to load: {self._public(error)}"
            )

    def _public(self, text: str) -> str:
        """`text` without this node's paths: a bundle's files relative to it, other paths hidden."""
        bundles = str((self.data / "bundles").resolve())
        text = re.sub(re.escape(bundles) + r"/[0-9a-f]{64}/?", "", text)
        for root in sorted({str(self.data.resolve()), str(self.data.absolute())}, key=len, reverse=True):
            text = text.replace(root, "<node data>")
        return text

    async def _spec(self, function: FunctionState, version: str) -> tuple[IsolateSpec, ScalePolicy]:
        directory = await self._bundle(function.name, version)
        manifest = load_manifest(directory, function.name)
        guard = build_guard(manifest, directory, function.jwks)  # raises ManifestError
        if guard is not None:
            self._require_app().guards[version] = guard  # before the version can serve
        # The desired state's name, timeout and env (with the secrets) win over the bundle's manifest.
        spec = msgspec.structs.replace(
            isolate_spec(directory, manifest, version),
            name=function.name,
            timeout_ms=function.timeout_ms,
            env=self.secrets.environment(function),
        )
        return spec, scale_policy(manifest, self.settings.scale)

    async def _bundle(self, name: str, version: str) -> Path:
        """The unpacked bundle, fetched, or checked against its stored archive, first (see the module)."""
        directory = self.data / "bundles" / version
        if version not in self._checked:
            await _blocking(self._prepare_bundle, name, version)
            self._checked.add(version)
        return directory

    def _prepare_bundle(self, name: str, version: str) -> None:
        """Make `bundles/<version>` hold exactly the archive's files (blocking; under a lock)."""
        directory = self.data / "bundles" / version
        with _locked(self.data / "bundles" / f".{version}.lock"):
            if not directory.is_dir():
                extract(self._archive(name, version, verifying=False), directory, name)
                _compile(directory)
                return
            archive = self._archive(name, version, verifying=True)
            clear_bytecode(directory)
            changed = verify_tree(archive, directory)
            if not changed:
                seal(directory)
                _compile(directory)
                return
            shown = ", ".join(changed[:10]) + (f" and {len(changed) - 10} more" if len(changed) > 10 else "")
            message = (
                f"function {name}: bundle {version[:12]} was changed on disk ({shown});"
                " unpacked it again from the stored archive"
            )
            log.error("%s (%s)", message, directory)
            replace_tree(archive, directory, name)
            _compile(directory)
            self.tampered.append(message)

    def _archive(self, name: str, version: str, verifying: bool) -> bytes:
        """The bundle archive: the stored copy when its digest holds, else fetched and stored."""
        path = self.data / "blobs" / version
        problem = ""
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            # Unpacked by a node from before archives were kept: it cannot be checked offline.
            problem = "its archive is not stored on this node" if verifying else ""
        else:
            if digest(data) == version:
                return data
            problem = f"the stored archive {path} does not match its digest"
            log.error("function %s: bundle %s: %s; fetching it again", name, version[:12], problem)
        try:
            with self._fetches:
                data = self.client.blob(version)  # raises BlobMismatch on a bad digest
        except ControlError as exc:
            if not problem:
                raise
            raise BundleError(
                f"bundle {version[:12]}: {problem}, and the origin cannot send it: {exc}"
            ) from None
        _write_atomic(path, data, 0o444)
        return data

    def _purge(self, order: PurgeOrder) -> None:
        app = self._require_app()
        app.purge(order.function, order.kind, order.value)

    def _set_routes(self) -> None:
        names = sorted({*self.effective, *self.statuses})
        routes = [(f"/{name}", name) for name in names]
        # After every implicit `/<name>`, so that a route the origin gave a function explicitly
        # (it gives each route to one function) wins over another function's name.
        for name in names:
            function = self.effective.get(name)
            routes.extend((route, name) for route in (function.routes if function else ()))
        self._require_app().set_routes(routes)

    def _require_app(self) -> NodeControl:
        if self._app is None:
            raise RuntimeError("OriginSource.start() was not called")
        return self._app


def _compile(directory: Path) -> None:
    """The bytecode cache of a checked bundle's modules (edge/bundle.py `compile_bytecode`)."""
    problem = compile_bytecode(directory)
    if problem:
        log.warning("%s", problem)
