"""`[auth] jwks_url` through a real origin and node: the origin fetches the key set (from a JWKS
server on loopback) at upload, ships it in the signed state, re-fetches it every `--jwks-refresh`
and publishes a rotation; uploads with an unusable key set or manifest are refused."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from fleet_harness import Fleet, Origin, run_edge, wait_for
from jwt_keys import ISSUER, jwks, new_key, token
from node_harness import Reply, request

from edge import bundle
from edge.control.client import OriginError

HANDLER = """\
def handler(request):
    return request.headers.get("x-edge-auth-subject") or "nobody"
"""


class JwksServer:
    """Serves one JWKS document at /jwks on loopback; `document` can be swapped (a key rotation)."""

    def __init__(self) -> None:
        self.document = b""
        self.fetches = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.fetches += 1
                status, body = (200, outer.document) if self.path == "/jwks" else (404, b"no")
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/jwks"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def keys() -> Iterator[JwksServer]:
    server = JwksServer()
    try:
        yield server
    finally:
        server.close()


def function(root: Path, name: str, auth: str, files: dict[str, str] | None = None) -> Path:
    directory = root / name
    directory.mkdir(parents=True)
    (directory / "edge.toml").write_text(f'name = "{name}"\n[auth]\n{auth}')
    (directory / "main.py").write_text(HANDLER)
    for filename, text in (files or {}).items():
        (directory / filename).write_text(text)
    return directory


def jwt_auth(source: str) -> str:
    return f'type = "jwt"\nissuer = "{ISSUER}"\naudience = "api"\n{source}\n'


def get(port: int, path: str, bearer: str) -> Reply:
    return request(port, path, headers={"authorization": f"Bearer {bearer}"})


def test_the_origin_ships_and_refreshes_a_jwks_url(fleet: Fleet, tmp_path: Path, keys: JwksServer) -> None:
    first, second = new_key(), new_key()
    keys.document = jwks(("k1", first)).encode()
    origin = fleet.origin = Origin(tmp_path / "origin", tmp_path / "origin.log")
    origin.argv += ["--jwks-refresh", "0.3"]
    origin.start()
    node = fleet.start_node()
    directory = function(tmp_path, "api", jwt_auth(f'jwks_url = "{keys.url}"'))
    deployed = run_edge("deploy", str(directory), "--wait", env=origin.env())
    assert deployed.returncode == 0, deployed.stderr
    assert get(node.port, "/api", token(first)).body == b"user-7"
    assert get(node.port, "/api", token(second, kid="k2")).status == 401
    # The identity provider rotates: k2 is published and k1 withdrawn; the node follows without a deploy.
    keys.document = jwks(("k2", second)).encode()
    wait_for(lambda: get(node.port, "/api", token(second, kid="k2")).status == 200, 20, "the rotated key")
    refused = get(node.port, "/api", token(first))
    assert (refused.status, refused.json()["error"]) == (
        401,
        "invalid token: no key with kid 'k1' in the JWKS",
    )
    # An identity provider that stops answering leaves the last good key set in place.
    fetched = keys.fetches
    keys.document = b"<html>maintenance</html>"
    wait_for(lambda: keys.fetches > fetched + 1, 10, "two more fetches")
    assert get(node.port, "/api", token(second, kid="k2")).status == 200
    assert "jwks refresh: keeping the last key set of" in origin.output()


def test_uploads_with_unusable_keys_are_refused(fleet: Fleet, tmp_path: Path, keys: JwksServer) -> None:
    origin = fleet.start_origin()
    admin = origin.admin()
    keys.document = b'{"keys": []}'

    def refusal(name: str, auth: str, files: dict[str, str] | None = None) -> str:
        data = bundle.pack(function(tmp_path, name, auth, files))
        with pytest.raises(OriginError) as caught:
            admin.deploy(name, data)
        assert caught.value.status == 400
        return caught.value.message

    assert refusal("empty", jwt_auth(f'jwks_url = "{keys.url}"')) == (
        f'edge.toml: `$.auth.jwks_url` {keys.url}: Expected a JWKS, {{"keys": [...]}} with at least'
        " one key, got {'keys': []}"
    )
    gone = keys.url.replace("/jwks", "/gone")
    assert refusal("gone", jwt_auth(f'jwks_url = "{gone}"')) == (
        f"edge.toml: `$.auth.jwks_url`: {gone}: the server answered 404 Not Found;"
        " make the URL answer with the JWKS"
    )
    assert refusal("nofile", jwt_auth('jwks_file = "jwks.json"')) == (
        "edge.toml: `$.auth.jwks_file` 'jwks.json' is not in the bundle; put the JWKS file beside edge.toml"
    )
    secret = '{"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "s"}]}'
    assert refusal("secret", jwt_auth('jwks_file = "jwks.json"'), {"jwks.json": secret}) == (
        'edge.toml: `$.auth.jwks_file` jwks.json: key 0: Expected a public key (kty "RSA", "EC" or'
        ' "OKP"), got a shared secret (kty "oct"): it would reach every node; sign tokens with an'
        " asymmetric key"
    )
    assert refusal("hs", jwt_auth('jwks_file = "jwks.json"\nalgorithms = ["HS256"]')) == (
        "edge.toml: Expected an asymmetric algorithm (RS256, RS384, RS512, PS256, PS384, PS512, ES256,"
        " ES384, ES512, EdDSA); HS* needs a shared secret in the JWKS, which a bundle must not carry,"
        " got 'HS256' - at `$.auth.algorithms[0]`"
    )
    assert [info.name for info in admin.functions()] == []
