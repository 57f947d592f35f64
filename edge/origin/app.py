"""The origin as an ASGI app: route lookup, bearer-token auth, errors as JSON, lifespan."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from edge.control.signing import Signer
from edge.origin import dashboard, keysets, logs, secrets, tokens
from edge.origin.blobs import Blobs, BlobStore
from edge.origin.datadir import DataDir
from edge.origin.http import (
    Disconnected,
    Receive,
    Request,
    Response,
    Scope,
    Send,
    error_response,
    send_response,
)
from edge.origin.routes import ROUTES, Route
from edge.origin.service import ApiError, Clock, Origin
from edge.origin.settings import OriginSettings, settings_from_env
from edge.origin.vault import Vault

__all__ = ["SHARED_GRACE_S", "OriginApp", "build_origin", "create_app", "open_blobs"]

# Seconds a blob no version refers to is kept when origins share the database (one may have
# stored it and not yet recorded its version).
SHARED_GRACE_S = 600.0

log = logging.getLogger("edge.origin")


class OriginApp:
    """Dispatch each request through `routes`, checking the bearer token's role first."""

    def __init__(self, origin: Origin, routes: list[Route] | None = None) -> None:
        if routes is None:
            routes = [*ROUTES, *logs.ROUTES, *dashboard.ROUTES, *secrets.ROUTES]
        self.origin = origin
        self.routes = routes
        self._refreshing: asyncio.Task[None] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        try:
            response = await self._handle(request)
        except Disconnected:
            return
        except ApiError as exc:
            response = error_response(exc.status, exc.message)
        except Exception as exc:
            log.exception("%s %s failed", request.method, request.path)
            response = error_response(500, f"internal error: {type(exc).__name__}")
        await send_response(send, response)

    async def _handle(self, request: Request) -> Response:
        route = self._route(request)
        if not route.public:
            self._authorize(request, route)
        return await route.handler(self.origin, request)

    def _route(self, request: Request) -> Route:
        allowed = []
        for route in self.routes:
            params = route.match(request.path)
            if params is None:
                continue
            if route.method == request.method:
                request.params = params
                return route
            allowed.append(route.method)
        if allowed:
            raise ApiError(
                405, f"{request.method} is not allowed on {request.path}; use {', '.join(allowed)}"
            )
        raise ApiError(404, f"no route for {request.method} {request.path}")

    def _authorize(self, request: Request, route: Route) -> None:
        token = request.bearer()
        if token is None:
            raise ApiError(401, "missing bearer token")
        record = tokens.authenticate(self.origin, token)
        role = record.role
        if role not in route.roles:
            wanted = " or ".join(sorted(route.roles))
            raise ApiError(
                403, f"{route.method} {route.pattern} needs the {wanted} role; this token has {role}"
            )
        request.role = role
        request.token = record

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                # Another origin's revision bump wakes this origin's long polls too.
                self.origin.store.listen(_threadsafe(asyncio.get_running_loop(), self.origin.wake))
                interval = self.origin.settings.jwks_refresh_s
                if interval > 0:
                    self._refreshing = asyncio.get_running_loop().create_task(
                        keysets.refresh_forever(self.origin, interval)
                    )
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._refreshing is not None:
                    self._refreshing.cancel()
                self.origin.store.close()
                await send({"type": "lifespan.shutdown.complete"})
                return


def _threadsafe(loop: asyncio.AbstractEventLoop, call: Callable[[], None]) -> Callable[[], None]:
    """`call`, run on `loop` whichever thread asks for it."""

    def threadsafe() -> None:
        loop.call_soon_threadsafe(call)

    return threadsafe


def open_blobs(settings: OriginSettings, data: DataDir) -> Blobs:
    """The blob store `settings.blobs` names: the data directory's `blobs/` or an S3 bucket."""
    if settings.blobs:
        from edge.origin.s3blobs import S3BlobStore

        return S3BlobStore(settings.blobs, data.blobs, settings.blobs_endpoint)
    # Origins sharing a database may share this directory too: keep fresh blobs a while.
    return BlobStore(data.blobs, grace_s=SHARED_GRACE_S if settings.database else 0.0)


def build_origin(settings: OriginSettings, clock: Clock = time.time) -> Origin:
    """Open (and initialise if needed) the data directory and build the origin on it."""
    data = DataDir(settings.data, settings.database)
    data.initialize()
    blobs = open_blobs(settings, data)
    blobs.clear_uploads()
    vault = Vault.load_or_create(data.secrets_key)
    origin = Origin(settings, data.open_store(), blobs, Signer.from_file(data.signing_key), clock, vault)
    origin.collect_blobs()
    return origin


def create_app() -> OriginApp:
    """The granian factory: settings come from `$EDGE_ORIGIN_SETTINGS`, which it removes."""
    return OriginApp(build_origin(settings_from_env()))
