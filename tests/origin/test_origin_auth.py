"""The auth matrix over every route in the route table, against the real origin."""

from __future__ import annotations

import http.client
import json

import pytest
from origin_harness import Origin

from edge.origin.routes import ADMIN, NODE, ROUTES, Route

PARAMS = {"name": "authfn", "digest": "0" * 64, "node_id": "node-auth", "id": "0" * 12}
QUERIES = {"/v1/sync": "?revision=999999&timeout=0"}


def _path(route: Route) -> str:
    path = route.pattern
    for key, value in PARAMS.items():
        path = path.replace("{" + key + "}", value)
    assert "{" not in path, f"add a sample value for the parameters of {route.pattern}"
    return path + QUERIES.get(route.pattern, "")


def _call(origin: Origin, route: Route, token: str | None) -> tuple[int, dict[str, str] | None]:
    conn = http.client.HTTPConnection("127.0.0.1", origin.port, timeout=10)
    headers = {"Content-Length": "0"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    try:
        conn.request(route.method, _path(route), headers=headers)
        response = conn.getresponse()
        body = response.read()
    finally:
        conn.close()
    return response.status, json.loads(body) if body else None


@pytest.fixture(scope="module")
def tokens(origin: Origin) -> dict[str, str]:
    return {"admin": origin.admin_token, "node": origin.token("node")}


def test_only_health_is_public() -> None:
    assert [(r.method, r.pattern) for r in ROUTES if r.public] == [("GET", "/v1/health")]
    assert all(r.roles for r in ROUTES if not r.public)


def test_a_route_without_roles_cannot_be_declared() -> None:
    async def handler(origin: object, request: object) -> object:
        raise NotImplementedError

    with pytest.raises(ValueError, match=r"^route GET /v1/oops: Expected roles, or public=True$"):
        Route("GET", "/v1/oops", frozenset(), handler)  # type: ignore[arg-type]


def test_every_route_is_in_one_table_without_duplicates() -> None:
    keys = [(r.method, r.pattern) for r in ROUTES]
    assert len(keys) == len(set(keys))


def test_health_needs_no_token(origin: Origin) -> None:
    route = next(r for r in ROUTES if r.public)
    status, body = _call(origin, route, None)
    assert status == 200
    assert body is not None and body["status"] == "ok"


@pytest.mark.parametrize(
    "route", [r for r in ROUTES if not r.public], ids=lambda r: f"{r.method} {r.pattern}"
)
def test_auth_matrix(origin: Origin, tokens: dict[str, str], route: Route) -> None:
    assert _call(origin, route, None) == (401, {"error": "missing bearer token"})
    assert _call(origin, route, "not-a-token") == (401, {"error": "unknown bearer token"})
    for role, token in tokens.items():
        status, body = _call(origin, route, token)
        if role in route.roles:
            assert status not in (401, 403), (role, status, body)
        else:
            wanted = " or ".join(sorted(route.roles))
            message = f"{route.method} {route.pattern} needs the {wanted} role; this token has {role}"
            assert (status, body) == (403, {"error": message})


def test_roles_by_route() -> None:
    """Admins may read what nodes read (key, sync, blobs); nodes may not use the admin API."""
    by_role = {(r.method, r.pattern): r.roles for r in ROUTES if not r.public}
    assert by_role.pop(("POST", "/v1/nodes/register")) == NODE
    assert by_role.pop(("POST", "/v1/nodes/{node_id}/report")) == NODE
    for read in [("GET", "/v1/key"), ("GET", "/v1/sync"), ("GET", "/v1/blobs/{digest}")]:
        assert by_role.pop(read) == NODE | ADMIN
    assert set(by_role.values()) == {ADMIN}


def test_unknown_route_and_method(origin: Origin) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", origin.port, timeout=5)
    conn.request("GET", "/v1/nope")
    response = conn.getresponse()
    assert (response.status, json.loads(response.read())) == (404, {"error": "no route for GET /v1/nope"})
    conn.request("PUT", "/v1/functions")
    response = conn.getresponse()
    assert (response.status, json.loads(response.read())) == (
        405,
        {"error": "PUT is not allowed on /v1/functions; use GET"},
    )
    conn.close()
