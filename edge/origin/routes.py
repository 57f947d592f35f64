"""The origin's HTTP API: every route, its role and its handler, in one table (`ROUTES`)."""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from edge import bundle
from edge.control.admin import Health, PurgeRequest, RollbackRequest, TokenRequest
from edge.control.messages import NodeInfo, NodeReport, PublicKey
from edge.origin import keysets, tokens
from edge.origin.blobs import BlobsUnavailable, CorruptBlob, is_digest
from edge.origin.datadir import Role
from edge.origin.http import Request, Response, json_response
from edge.origin.service import ApiError, Origin
from isolates.manifest import Manifest

__all__ = ["ADMIN", "NODE", "PUBLIC", "ROUTES", "Handler", "Route"]

Handler = Callable[[Origin, Request], Awaitable[Response]]

ADMIN: frozenset[Role] = frozenset({"admin"})
NODE: frozenset[Role] = frozenset({"node"})
READ: frozenset[Role] = frozenset({"node", "admin"})
PUBLIC: frozenset[Role] = frozenset()

_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
_NODE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_PARAM = re.compile(r"\{(\w+)\}")


@dataclass(frozen=True)
class Route:
    """One method + path pattern (`{param}` matches one segment), the roles allowed, the handler."""

    method: str
    pattern: str
    roles: frozenset[Role]
    handler: Handler
    public: bool = False
    regex: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.roles and not self.public:
            raise ValueError(f"route {self.method} {self.pattern}: Expected roles, or public=True")
        parts, start = [], 0
        for param in _PARAM.finditer(self.pattern):
            parts += [re.escape(self.pattern[start : param.start()]), f"(?P<{param[1]}>[^/]+)"]
            start = param.end()
        parts.append(re.escape(self.pattern[start:]))
        object.__setattr__(self, "regex", re.compile("".join(parts)))

    def match(self, path: str) -> dict[str, str] | None:
        """The path parameters when `path` fits the pattern, else None."""
        found = self.regex.fullmatch(path)
        return None if found is None else found.groupdict()


def _function_name(request: Request) -> str:
    name = request.params["name"]
    if not _NAME.fullmatch(name):
        raise ApiError(
            400, f"function name: Expected 1-63 lowercase letters, digits, '-' or '_', got {name!r}"
        )
    return name


def _node_id(value: str, where: str) -> str:
    if not _NODE_ID.fullmatch(value):
        raise ApiError(
            400, f"{where}: Expected 1-128 letters, digits, '.', '_' or '-' (not first), got {value!r}"
        )
    return value


def _number(request: Request, key: str, default: float | None) -> float | None:
    raw = request.query.get(key)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise ApiError(400, f"query `{key}`: Expected a number >= 0, got {raw!r}")
    return value


async def health(origin: Origin, request: Request) -> Response:
    """Liveness and the current revision."""
    return json_response(Health(status="ok", revision=origin.revision))


async def key(origin: Origin, request: Request) -> Response:
    """The public key nodes pin."""
    return json_response(PublicKey(public_key=origin.signer.public_key))


async def register(origin: Origin, request: Request) -> Response:
    """A node says who it is."""
    info = await request.json(NodeInfo)
    _node_id(info.node_id, "request body: `$.node_id`")
    owner = tokens.check_node(origin, request.token, info.node_id)
    return json_response(origin.register(info, owner))


async def sync(origin: Origin, request: Request) -> Response:
    """Long poll: the signed state when newer than `revision`, else 204 after `timeout` seconds."""
    revision = _number(request, "revision", 0.0)
    if revision is None or revision != int(revision):
        raise ApiError(400, f"query `revision`: Expected an integer >= 0, got {request.query['revision']!r}")
    timeout = min(
        _number(request, "timeout", origin.settings.default_poll_s) or 0.0, origin.settings.max_poll_s
    )
    node_id = request.query.get("node_id") or None
    owner = None
    if node_id is not None:
        owner = tokens.check_node(origin, request.token, _node_id(node_id, "query `node_id`"))
        origin.seen(node_id, token_hash=owner)
    newer = await origin.wait_newer(int(revision), timeout)
    if request.token is not None:  # revoked or expired during the wait: nothing more for it
        tokens.recheck(origin, request.token)
    if node_id is not None:
        origin.seen(node_id, token_hash=owner)
    if not newer:
        return Response(204)
    return json_response(origin.signed_state(node_id))


async def blob(origin: Origin, request: Request) -> Response:
    """A bundle by its sha256 digest."""
    digest = request.params["digest"]
    if not is_digest(digest):
        raise ApiError(400, f"blob digest: Expected 64 lowercase hex digits, got {digest!r}")
    try:
        path = await asyncio.to_thread(origin.blobs.fetch, digest)
        size = None if path is None else path.stat().st_size
    except FileNotFoundError:  # collected between the two calls
        path, size = None, None
    except CorruptBlob as exc:
        raise ApiError(500, str(exc)) from None
    except BlobsUnavailable as exc:
        raise ApiError(503, str(exc)) from None
    if path is None or size is None:
        raise ApiError(404, f"no blob {digest}")

    async def chunks() -> AsyncIterator[bytes]:
        with path.open("rb") as source:
            while chunk := source.read(1 << 20):
                yield chunk

    return Response(200, content_type="application/gzip", chunks=chunks, length=size)


async def report(origin: Origin, request: Request) -> Response:
    """A node's heartbeat with what it has applied."""
    node_id = _node_id(request.params["node_id"], "node id")
    body = await request.json(NodeReport)
    if body.node_id != node_id:
        raise ApiError(
            400, f"request body: Expected `$.node_id` {node_id!r} as in the URL, got {body.node_id!r}"
        )
    origin.seen(node_id, body, tokens.check_node(origin, request.token, node_id))
    return Response(204)


async def nodes(origin: Origin, request: Request) -> Response:
    """Every node and its last report."""
    return json_response(origin.nodes())


async def functions(origin: Origin, request: Request) -> Response:
    """Every function and its releases."""
    return json_response(origin.functions())


async def function(origin: Origin, request: Request) -> Response:
    """One function and its kept versions."""
    return json_response(origin.function(_function_name(request)))


def _validate_file(path: Path, name: str, limits: bundle.Limits, bounds: bundle.ManifestBounds) -> Manifest:
    return bundle.validate(path.read_bytes(), name, limits, bounds)


async def deploy(origin: Origin, request: Request) -> Response:
    """Upload a bundle: stream to a temp file, validate, move into the blob store, then commit."""
    name = _function_name(request)
    canary = None
    if "canary" in request.query:
        raw = request.query["canary"]
        if not raw.isdigit() or not 1 <= int(raw) <= 100:
            raise ApiError(400, f"query `canary`: Expected a percentage from 1 to 100, got {raw!r}")
        canary = int(raw)
    force = request.query.get("force", "0")
    if force not in ("0", "1"):
        raise ApiError(400, f"query `force`: Expected 0 or 1, got {force!r}")
    limits = origin.settings.limits
    declared = request.content_length()
    if declared is not None and declared > limits.max_bytes:
        raise ApiError(400, f"bundle is {declared} bytes compressed; the limit is {limits.max_bytes}")
    upload = origin.blobs.upload()
    try:
        async for chunk in request.stream():
            upload.write(chunk)
            if upload.size > limits.max_bytes:
                raise ApiError(400, f"bundle is over {limits.max_bytes} bytes compressed; that is the limit")
        version = await asyncio.to_thread(upload.finish)
        try:
            manifest = await asyncio.to_thread(
                _validate_file, upload.path, name, limits, origin.settings.bounds
            )
        except bundle.BundleError as exc:
            raise ApiError(400, str(exc)) from None
        if manifest.name != name:
            raise ApiError(
                400,
                f"edge.toml: Expected the name `{name}` the bundle is deployed as, got {manifest.name!r}"
                " - at `$.name`",
            )
        try:
            jwks = await asyncio.to_thread(keysets.check_upload, upload.path, manifest, limits)
        except bundle.BundleError as exc:
            raise ApiError(400, str(exc)) from None
    except BaseException:
        upload.discard()
        raise
    try:
        await asyncio.to_thread(origin.blobs.commit, upload, version)
    except BaseException as exc:
        upload.discard()
        if isinstance(exc, BlobsUnavailable):
            raise ApiError(503, f"{exc}; nothing was deployed: send it again") from None
        raise
    try:
        result = origin.deploy(name, version, upload.size, manifest, canary, force=force == "1", jwks=jwks)
    except BaseException:
        origin.collect_blobs()
        raise
    return json_response(result, 201)


async def promote(origin: Origin, request: Request) -> Response:
    """The canary takes all traffic."""
    return json_response(origin.promote(_function_name(request)))


async def rollback(origin: Origin, request: Request) -> Response:
    """Back to the previous version or to `to`."""
    name = _function_name(request)
    body = await request.json(RollbackRequest)
    return json_response(origin.rollback(name, body.to))


async def remove(origin: Origin, request: Request) -> Response:
    """Remove a function."""
    return json_response(origin.remove(_function_name(request)))


async def purge(origin: Origin, request: Request) -> Response:
    """Order a cache purge."""
    name = _function_name(request)
    return json_response(origin.purge(name, await request.json(PurgeRequest)), 201)


async def token_list(origin: Origin, request: Request) -> Response:
    """Every token by id, never the token itself."""
    return json_response(tokens.listing(origin.store))


async def token_create(origin: Origin, request: Request) -> Response:
    """Mint a token; the answer carries it this once."""
    body = await request.json(TokenRequest)
    created = tokens.create(origin.store, body.role, origin.clock(), body.expires_in_s, body.node_id)
    return json_response(created, 201)


async def token_revoke(origin: Origin, request: Request) -> Response:
    """Revoke a token: refused from its next request on."""
    return json_response(tokens.revoke(origin.store, request.params["id"], origin.clock()))


ROUTES: list[Route] = [
    Route("GET", "/v1/health", PUBLIC, health, public=True),
    Route("GET", "/v1/key", READ, key),
    Route("POST", "/v1/nodes/register", NODE, register),
    Route("GET", "/v1/sync", READ, sync),
    Route("GET", "/v1/blobs/{digest}", READ, blob),
    Route("POST", "/v1/nodes/{node_id}/report", NODE, report),
    Route("GET", "/v1/nodes", ADMIN, nodes),
    Route("GET", "/v1/functions", ADMIN, functions),
    Route("GET", "/v1/functions/{name}", ADMIN, function),
    Route("DELETE", "/v1/functions/{name}", ADMIN, remove),
    Route("POST", "/v1/functions/{name}/versions", ADMIN, deploy),
    Route("POST", "/v1/functions/{name}/promote", ADMIN, promote),
    Route("POST", "/v1/functions/{name}/rollback", ADMIN, rollback),
    Route("POST", "/v1/functions/{name}/purges", ADMIN, purge),
    Route("GET", "/v1/tokens", ADMIN, token_list),
    Route("POST", "/v1/tokens", ADMIN, token_create),
    Route("POST", "/v1/tokens/{id}/revoke", ADMIN, token_revoke),
]
