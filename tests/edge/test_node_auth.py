"""Function auth and CORS over HTTP on a real node (`edge node --functions DIR`): API keys, JWTs,
preflights answered by the node, CORS headers on cache hits, and refused requests never reaching
the function."""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from jwt_keys import ISSUER, jwks, new_key, unsigned
from jwt_keys import token as signed_token
from node_harness import Node, Reply, request, write_function

from loadtest._servers import Server, free_port

KEY = "k3y-0123456789abcdef"
KEY_HASH = hashlib.sha256(KEY.encode()).hexdigest()

# Counts the requests it answers; the public path tells the count without counting itself.
COUNTING = """
    import json

    calls = 0

    def handler(request):
        global calls
        if request.path.endswith("/calls"):
            return str(calls)
        calls += 1
        identity = {
            "subject": request.headers.get("x-edge-auth-subject"),
            "claims": request.headers.get("x-edge-auth-claims"),
            "calls": calls,
        }
        return (json.dumps(identity), 200, {"x-total": str(calls), "access-control-allow-origin": "evil"})
"""

# The same function, saying its answers may be shared by every caller.
SHARED = COUNTING.replace('"access-control-allow-origin": "evil"}', '"cache-control": "public, max-age=60"}')
assert SHARED != COUNTING

SIGNING = new_key()
OTHER = new_key()


def token(key: Any = SIGNING, kid: str = "k1", **claims: Any) -> str:
    return signed_token(key, kid, **claims)


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    root = tmp_path_factory.mktemp("functions")
    write_function(
        root,
        "keyed",
        COUNTING,
        f'[auth]\ntype = "token"\nheader = "x-api-key"\nkeys_sha256 = ["{"0" * 64}", "{KEY_HASH}"]\n'
        'public = ["/keyed/calls"]\n',
    )
    write_function(
        root,
        "signed",
        COUNTING,
        f'[auth]\ntype = "jwt"\nissuer = "{ISSUER}"\naudience = "api"\njwks_file = "keys/jwks.json"\n'
        'required_claims = ["sub"]\npublic = ["/signed/calls"]\n',
        files={"keys/jwks.json": jwks(("k1", SIGNING))},
    )
    write_function(
        root,
        "site",
        COUNTING,
        f'[auth]\ntype = "token"\nkeys_sha256 = ["{KEY_HASH}"]\npublic = ["/site/calls", "/site/public/"]\n'
        '[cors]\norigins = ["https://a.example", "http://localhost:3000"]\nmethods = ["GET", "PUT"]\n'
        'headers = ["content-type", "x-trace"]\nexpose_headers = ["x-total"]\ncredentials = true\n'
        "max_age = 60\n[cache]\nttl = 60\n",
    )
    write_function(
        root,
        "stored",
        SHARED,
        f'[auth]\ntype = "token"\nheader = "x-api-key"\nkeys_sha256 = ["{KEY_HASH}"]\n'
        'public = ["/stored/calls"]\n',
    )
    write_function(
        root,
        "personal",
        COUNTING,
        f'[auth]\ntype = "token"\nheader = "x-api-key"\nkeys_sha256 = ["{KEY_HASH}"]\n'
        'public = ["/personal/calls"]\n[cache]\nttl = 60\n',
    )
    write_function(root, "anyone", COUNTING, '[cors]\norigins = ["*"]\n')
    write_function(root, "broken", COUNTING, '[cors]\norigins = ["*"]\ncredentials = true\n')
    write_function(
        root,
        "remote",
        COUNTING,
        f'[auth]\ntype = "jwt"\nissuer = "{ISSUER}"\naudience = "api"\njwks_url = "http://127.0.0.1:9/jwks"\n',
    )
    port = free_port()
    log = root.parent / "node.log"
    argv = ["-m", "edge", "node", "--functions", str(root), "--port", str(port)]
    server = Server(
        [__import__("sys").executable, *argv], f"http://127.0.0.1:{port}/_edge/ready", log_path=log
    )
    server.start(60.0)
    try:
        yield Node(port, log, server)
    finally:
        server.stop()


def get(node: Node, path: str, method: str = "GET", **headers: str) -> Reply:
    return request(
        node.port, path, method=method, headers={k.replace("_", "-"): v for k, v in headers.items()}
    )


def calls(node: Node, name: str) -> int:
    return int(get(node, f"/{name}/calls").body)


def test_api_key_missing_wrong_and_right(node: Node) -> None:
    before = calls(node, "keyed")
    missing = get(node, "/keyed/x")
    assert (missing.status, missing.json()["error"]) == (401, "missing credentials: send `x-api-key`")
    assert missing.headers["www-authenticate"] == 'ApiKey realm="keyed", header="x-api-key"'
    assert missing.headers["content-type"] == "application/json"
    wrong = get(node, "/keyed/x", x_api_key="not-the-key-at-all")
    assert (wrong.status, wrong.json()["error"]) == (401, "invalid API key")
    assert wrong.headers["www-authenticate"] == (
        'ApiKey realm="keyed", header="x-api-key", error="invalid_token", error_description="invalid API key"'
    )
    forged = get(node, "/keyed/x", x_edge_auth_subject="admin")
    assert forged.status == 401
    assert calls(node, "keyed") == before  # the function never ran for a refused request
    right = get(node, "/keyed/x", x_api_key=KEY, x_edge_auth_subject="admin", x_edge_auth_claims="{}")
    assert right.status == 200
    assert right.json() == {"subject": f"key:{KEY_HASH[:12]}", "claims": None, "calls": before + 1}


def test_a_valid_jwt_reaches_the_function_with_its_identity(node: Node) -> None:
    reply = get(node, "/signed/x", authorization=f"Bearer {token(scope='read')}", x_edge_auth_subject="admin")
    assert reply.status == 200, reply.body
    seen = reply.json()
    assert seen["subject"] == "user-7"
    claims = json.loads(seen["claims"])
    assert (claims["iss"], claims["aud"], claims["scope"]) == (ISSUER, "api", "read")


@pytest.mark.parametrize(
    ("credential", "status", "error"),
    [
        (None, 401, "missing credentials: send `Authorization: Bearer <credential>`"),
        (
            lambda: f"Basic {base64.b64encode(b'u:p').decode()}",
            401,
            "missing credentials: send `Authorization: Bearer <credential>`",
        ),
        (lambda: "Bearer " + token(exp=int(time.time()) - 60), 401, "invalid token: expired"),
        (lambda: "Bearer " + token(iss="https://other.test"), 401, "invalid token: Invalid issuer"),
        (
            lambda: "Bearer " + token(aud="billing"),
            403,
            "token not for this function: Audience doesn't match",
        ),
        (lambda: "Bearer " + token(key=OTHER), 401, "invalid token: Signature verification failed"),
        (lambda: "Bearer " + token(kid="k2"), 401, "invalid token: no key with kid 'k2' in the JWKS"),
        (lambda: "Bearer " + unsigned(), 401, "invalid token: algorithm 'none' is not in [auth] algorithms"),
        (lambda: "Bearer " + token(sub=None), 401, 'invalid token: Token is missing the "sub" claim'),
        (lambda: "Bearer " + token(exp=None), 401, 'invalid token: Token is missing the "exp" claim'),
        (lambda: "Bearer not.a.jwt", 401, "invalid token: Invalid header padding"),
    ],
    ids=[
        "missing",
        "basic",
        "expired",
        "issuer",
        "audience",
        "signature",
        "kid",
        "alg-none",
        "no-sub",
        "no-exp",
        "garbage",
    ],
)
def test_a_jwt_that_does_not_admit_is_refused(node: Node, credential: Any, status: int, error: str) -> None:
    before = calls(node, "signed")
    headers = {} if credential is None else {"authorization": credential()}
    reply = get(node, "/signed/x", **headers)
    assert (reply.status, reply.json()["error"]) == (status, error)
    challenge = reply.headers["www-authenticate"]
    assert challenge.startswith('Bearer realm="signed"')
    if credential is not None and status == 403:
        assert 'error="insufficient_scope"' in challenge
    assert calls(node, "signed") == before


def test_preflight_is_answered_by_the_node_without_credentials(node: Node) -> None:
    before = calls(node, "site")
    allowed = get(
        node,
        "/site/x",
        "OPTIONS",
        origin="https://a.example",
        access_control_request_method="PUT",
        access_control_request_headers="Content-Type, X-Trace",
    )
    assert allowed.status == 204
    assert {name: value for name, value in allowed.headers.items() if name.startswith("access-control")} == {
        "access-control-allow-origin": "https://a.example",
        "access-control-allow-credentials": "true",
        "access-control-expose-headers": "x-total",
        "access-control-allow-methods": "GET, PUT",
        "access-control-allow-headers": "content-type, x-trace",
        "access-control-max-age": "60",
    }
    assert allowed.headers["vary"] == "Origin, Access-Control-Request-Method, Access-Control-Request-Headers"
    origin = get(node, "/site/x", "OPTIONS", origin="https://b.example", access_control_request_method="GET")
    assert (origin.status, origin.json()["error"]) == (
        403,
        "CORS: origin 'https://b.example' is not in [cors] origins",
    )
    assert "access-control-allow-origin" not in origin.headers
    method = get(
        node, "/site/x", "OPTIONS", origin="https://a.example", access_control_request_method="DELETE"
    )
    assert (method.status, method.json()["error"]) == (403, "CORS: method 'DELETE' is not in [cors] methods")
    header = get(
        node,
        "/site/x",
        "OPTIONS",
        origin="https://a.example",
        access_control_request_method="GET",
        access_control_request_headers="x-secret",
    )
    assert (header.status, header.json()["error"]) == (
        403,
        "CORS: request headers x-secret are not in [cors] headers",
    )
    assert calls(node, "site") == before


def test_actual_responses_and_refusals_carry_cors_headers(node: Node) -> None:
    refused = get(node, "/site/x", origin="http://localhost:3000")
    assert refused.status == 401
    assert refused.headers["access-control-allow-origin"] == "http://localhost:3000"
    assert refused.headers["vary"] == "Origin"
    admitted = get(node, "/site/x", origin="http://localhost:3000", authorization=f"Bearer {KEY}")
    assert admitted.status == 200
    assert (
        admitted.headers["access-control-allow-origin"] == "http://localhost:3000"
    )  # not the function's "evil"
    assert admitted.headers["access-control-allow-credentials"] == "true"
    assert admitted.headers["access-control-expose-headers"] == "x-total"
    anyone = get(node, "/anyone/x", origin="https://z.example")
    assert anyone.headers["access-control-allow-origin"] == "*"
    assert "vary" not in anyone.headers
    other = get(
        node, "/anyone/x", "OPTIONS", origin="https://z.example", access_control_request_method="POST"
    )
    assert (other.status, other.headers["access-control-allow-origin"]) == (204, "*")


def test_cors_headers_follow_the_request_on_cache_hits(node: Node) -> None:
    first = get(node, "/site/public/page", origin="https://a.example")
    assert (first.status, first.headers["x-cache"]) == (200, "MISS")
    hit = get(node, "/site/public/page", origin="http://localhost:3000")
    assert (hit.headers["x-cache"], hit.body) == ("HIT", first.body)
    assert hit.headers["access-control-allow-origin"] == "http://localhost:3000"
    assert hit.headers["vary"] == "Origin"
    stranger = get(node, "/site/public/page", origin="https://b.example")
    assert stranger.headers["x-cache"] == "HIT"
    assert "access-control-allow-origin" not in stranger.headers
    assert stranger.headers["vary"] == "Origin"


def test_a_cached_response_never_skips_auth(node: Node) -> None:
    # An authenticated request goes to the function (RFC 9111 3.5), whose public answer is stored.
    assert get(node, "/stored/page", x_api_key=KEY).headers["x-cache"] == "BYPASS"
    assert get(node, "/stored/page", x_api_key=KEY).headers["x-cache"] == "HIT"
    refused = get(node, "/stored/page")
    assert (refused.status, refused.json()["error"]) == (401, "missing credentials: send `x-api-key`")
    assert get(node, "/stored/page", x_api_key="not-the-key-at-all").status == 401
    assert calls(node, "stored") == 1


def test_an_authenticated_answer_is_not_shared_unless_it_says_public(node: Node) -> None:
    # An API key in x-api-key is as personal as one in Authorization (RFC 9111 3.5): a [cache]
    # ttl alone does not hand one caller's answer to the next.
    assert [get(node, "/personal/me", x_api_key=KEY).headers["x-cache"] for _ in range(2)] == ["BYPASS"] * 2
    assert calls(node, "personal") == 2


def test_unusable_policies_make_the_function_answer_503_and_leave_the_others_serving(node: Node) -> None:
    broken = get(node, "/broken/x")
    assert broken.status == 503
    assert broken.json()["error"].endswith(
        "broken/edge.toml: Expected the origins listed by name when credentials = true (browsers refuse"
        " \"*\" with credentials), got ['*'] - at `$.cors.origins`"
    )
    remote = get(node, "/remote/x")
    assert remote.status == 503
    assert remote.json()["error"].endswith(
        "remote/edge.toml: `$.auth.jwks_url` 'http://127.0.0.1:9/jwks': no key set was shipped for it;"
        " nodes never fetch keys: deploy through an origin, or use `jwks_file` (a file in the bundle)"
    )
    assert get(node, "/anyone/x").status == 200
