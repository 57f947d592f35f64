"""What `edge init` writes for each handler kind: files by name, `{name}` replaced.

Every template answers `GET /NAME?name=Ada` with 200 `{"message": "hello Ada"}` and needs no
third-party package (plain ASGI and WSGI callables), so its test_main.py passes with only the
`edge-functions` package installed.
"""

from __future__ import annotations

__all__ = ["KINDS", "render"]

_EDGE_MAIN = '''\
"""{name}: an edge function. Reference: docs/sdk.md."""

from edgefn import Request


def handler(request: Request) -> dict[str, str]:
    name = request.args.get("name", "world")
    return {{"message": f"hello {{name}}"}}
'''

_LAMBDA_MAIN = '''\
"""{name}: an AWS Lambda handler behind an API Gateway HTTP API event (payload 2.0)."""

import json
from typing import Any


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    name = (event.get("queryStringParameters") or {{}}).get("name", "world")
    return {{
        "statusCode": 200,
        "headers": {{"content-type": "application/json"}},
        "body": json.dumps({{"message": f"hello {{name}}"}}),
    }}
'''

_OPENFAAS_MAIN = '''\
"""{name}: an OpenFaaS python3-http handler."""

import json
from typing import Any


def handle(event: Any, context: Any) -> dict[str, Any]:
    name = event.query.get("name", "world")
    return {{
        "statusCode": 200,
        "headers": {{"content-type": "application/json"}},
        "body": json.dumps({{"message": f"hello {{name}}"}}),
    }}
'''

_ASGI_MAIN = '''\
"""{name}: a plain ASGI 3 application (any ASGI framework's app works the same way)."""

import json
from typing import Any
from urllib.parse import parse_qs


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({{"type": "lifespan.startup.complete"}})
            elif message["type"] == "lifespan.shutdown":
                await send({{"type": "lifespan.shutdown.complete"}})
                return
    query = parse_qs(scope["query_string"].decode("latin-1"))
    body = json.dumps({{"message": f"hello {{query.get('name', ['world'])[0]}}"}}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({{"type": "http.response.start", "status": 200, "headers": headers}})
    await send({{"type": "http.response.body", "body": body}})
'''

_WSGI_MAIN = '''\
"""{name}: a plain WSGI application (a Flask or Bottle app works the same way)."""

import json
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    query = parse_qs(environ.get("QUERY_STRING", ""))
    body = json.dumps({{"message": f"hello {{query.get('name', ['world'])[0]}}"}}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
'''

_TEST = '''\
"""Run with `python -m pytest` in this directory: the handler runs as a node runs it."""

from edgefn.testing import call

from main import {attribute}


def test_hello() -> None:
    response = call({attribute}, "GET", "/{name}", query={{"name": "Ada"}}{kind_argument})
    assert response.status == 200
    assert response.json() == {{"message": "hello Ada"}}
'''

# kind -> (main.py, the entrypoint's attribute)
_MAINS = {
    "edge": (_EDGE_MAIN, "handler"),
    "lambda": (_LAMBDA_MAIN, "handler"),
    "openfaas": (_OPENFAAS_MAIN, "handle"),
    "asgi": (_ASGI_MAIN, "app"),
    "wsgi": (_WSGI_MAIN, "app"),
}


def _manifest(name: str, kind: str, attribute: str) -> str:
    return f'name = "{name}"\nkind = "{kind}"\nentrypoint = "main:{attribute}"\n'


def render(name: str, kind: str) -> dict[str, str]:
    """The files of a new function directory: file name -> text."""
    main, attribute = _MAINS[kind]
    kind_argument = "" if kind == "edge" else f', kind="{kind}"'
    return {
        "edge.toml": _manifest(name, kind, attribute),
        "main.py": main.format(name=name),
        "test_main.py": _TEST.format(name=name, attribute=attribute, kind_argument=kind_argument),
    }


KINDS = tuple(_MAINS)
