"""The admin API for functions' secrets (`ROUTES`): set, list without values, remove, and forget
a node's registered key. The behaviour is in vault.py; values never reach a log or an answer."""

from __future__ import annotations

from edge.origin.http import Request, Response, json_response
from edge.origin.routes import ADMIN, Route, _function_name, _node_id
from edge.origin.service import ApiError, Origin
from edge.origin.vault import MAX_VALUE_BYTES, SecretsRefused, check_key

__all__ = ["ROUTES"]


def _key(request: Request) -> str:
    try:
        return check_key(request.params["key"])
    except SecretsRefused as exc:
        raise ApiError(exc.status, exc.message) from None


async def _value(request: Request, key: str) -> bytes:
    """The request body, refused as soon as it passes the bound (never read whole first)."""
    too_big = f"secret {key}: Expected a value of 1 to {MAX_VALUE_BYTES} bytes, got more"
    declared = request.content_length()
    if declared is not None and declared > MAX_VALUE_BYTES:
        raise ApiError(413, too_big)
    parts, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_VALUE_BYTES:
            raise ApiError(413, too_big)
        parts.append(chunk)
    return b"".join(parts)


async def list_secrets(origin: Origin, request: Request) -> Response:
    """A function's secret keys, sizes and update times (never values)."""
    name = _function_name(request)
    return json_response(origin.secrets.listing(name, origin.env_keys(name)))


async def set_secret(origin: Origin, request: Request) -> Response:
    """Set one secret from the raw request body; bumps the revision (nodes pick it up, no deploy)."""
    name = _function_name(request)
    key = _key(request)
    value = await _value(request, key)
    try:
        return json_response(origin.secrets.set(name, key, value, origin.env_keys(name)))
    except SecretsRefused as exc:
        raise ApiError(exc.status, exc.message) from None


async def remove_secret(origin: Origin, request: Request) -> Response:
    """Remove one secret; bumps the revision."""
    name = _function_name(request)
    try:
        return json_response(origin.secrets.remove(name, _key(request)))
    except SecretsRefused as exc:
        raise ApiError(exc.status, exc.message) from None


async def forget_node_key(origin: Origin, request: Request) -> Response:
    """Forget the public key a node registered, so that it may register a new one."""
    node_id = _node_id(request.params["node_id"], "node id")
    try:
        return json_response(origin.secrets.forget_key(node_id))
    except SecretsRefused as exc:
        raise ApiError(exc.status, exc.message) from None


ROUTES: list[Route] = [
    Route("GET", "/v1/functions/{name}/secrets", ADMIN, list_secrets),
    Route("PUT", "/v1/functions/{name}/secrets/{key}", ADMIN, set_secret),
    Route("DELETE", "/v1/functions/{name}/secrets/{key}", ADMIN, remove_secret),
    Route("DELETE", "/v1/nodes/{node_id}/key", ADMIN, forget_node_key),
]
