"""The deploy-time entrypoint check: a bundle whose entrypoint surely does not fit its kind is refused
(read with `ast`, never run), with the kind, the expected signature and the fix; anything the check
cannot tell passes. Then a real origin refuses such an upload before anything is published."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from edge import bundle
from loadtest._servers import Server, free_port

REPO = Path(__file__).resolve().parents[2]


def _validate(tmp_path: Path, manifest: str, main: str, files: dict[str, str] | None = None) -> None:
    directory = tmp_path / "fn"
    directory.mkdir()
    (directory / "edge.toml").write_text(textwrap.dedent(manifest))
    if main:
        (directory / "main.py").write_text(textwrap.dedent(main))
    for name, text in (files or {}).items():
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        (directory / name).write_text(textwrap.dedent(text))
    bundle.validate(bundle.pack(directory), "fn")


LAMBDA_FIX = (
    'this looks like a Lambda handler(event, context): set `kind = "lambda"` (or `kind = "openfaas"` '
    "for an OpenFaaS python3-http handle(event, context)) in edge.toml - at `$.kind`"
)
ASGI_FIX = 'this looks like an ASGI application(scope, receive, send): set `kind = "asgi"` in edge.toml'
WSGI_FIX = 'this looks like a WSGI application(environ, start_response): set `kind = "wsgi"` in edge.toml'
EDGE_FIX = 'this looks like an edge handler(request): set `kind = "edge"` (the default) in edge.toml'
ASGI = "an ASGI 3 application: async def app(scope, receive, send)"
WSGI = "a WSGI application: app(environ, start_response)"

REFUSED = [
    pytest.param(
        "",
        "def handler(event, context):\n    return {}\n",
        "edge.toml: kind = 'edge' expects handler(request); entrypoint 'main:handler' (main.py:1) takes "
        f"(event, context): {LAMBDA_FIX}",
        id="edge-given-lambda",
    ),
    pytest.param(
        "",
        "import json\n\n\ndef hello(request):\n    return 'hi'\n",
        "edge.toml: entrypoint 'main:handler' is not defined: main.py has no top-level def, class, "
        "assignment or import of `handler` (it defines hello); define it, or point `entrypoint` at the "
        'handler: entrypoint = "main:hello" - at `$.entrypoint`',
        id="undefined-one-candidate",
    ),
    pytest.param(
        'entrypoint = "main:run"',
        "def a(request):\n    pass\n\n\nclass B:\n    pass\n",
        "edge.toml: entrypoint 'main:run' is not defined: main.py has no top-level def, class, "
        "assignment or import of `run` (it defines a, B); define it, or point `entrypoint` at the "
        "handler - at `$.entrypoint`",
        id="undefined",
    ),
    pytest.param(
        'kind = "asgi"',
        "def app(scope, receive, send):\n    pass\n",
        f"edge.toml: kind = 'asgi' expects {ASGI}; entrypoint 'main:app' (main.py:1) takes "
        "(scope, receive, send): define it with `async def` - at `$.entrypoint`",
        id="asgi-not-async",
    ),
    pytest.param(
        'kind = "wsgi"',
        "x = 1\n\nasync def app(environ, start_response):\n    pass\n",
        f"edge.toml: kind = 'wsgi' expects {WSGI}; entrypoint 'main:app' (main.py:3) takes "
        f"async (environ, start_response): {ASGI_FIX} - at `$.kind`",
        id="wsgi-async",
    ),
    pytest.param(
        'kind = "lambda"',
        "def handler(environ, start_response):\n    pass\n",
        "edge.toml: kind = 'lambda' expects handler(event, context); entrypoint 'main:handler' (main.py:1)"
        f" takes (environ, start_response): {WSGI_FIX} - at `$.kind`",
        id="lambda-given-wsgi",
    ),
    pytest.param(
        'kind = "openfaas"\nentrypoint = "main:handle"',
        "async def handle(request):\n    pass\n",
        "edge.toml: kind = 'openfaas' expects handle(event, context); entrypoint 'main:handle' (main.py:1)"
        f" takes async (request): {EDGE_FIX} - at `$.kind`",
        id="openfaas-given-edge",
    ),
    pytest.param(
        'entrypoint = "main:app"',
        "from flask import Flask\n\napp = Flask(__name__)\n",
        "edge.toml: kind = 'edge' expects handler(request); entrypoint 'main:app' (main.py:3) is a WSGI "
        f"application (Flask): {WSGI_FIX} - at `$.kind`",
        id="flask-as-edge",
    ),
    pytest.param(
        'kind = "wsgi"',
        "import fastapi\n\nif True:\n    app: fastapi.FastAPI = fastapi.FastAPI(title='x')\n",
        f"edge.toml: kind = 'wsgi' expects {WSGI}; entrypoint 'main:app' (main.py:4) is an ASGI "
        f"application (FastAPI): {ASGI_FIX} - at `$.kind`",
        id="fastapi-as-wsgi",
    ),
    pytest.param(
        'kind = "asgi"',
        "from bottle import Bottle\napp = Bottle()\n",
        f"edge.toml: kind = 'asgi' expects {ASGI}; entrypoint 'main:app' (main.py:2) is a WSGI "
        f"application (Bottle): {WSGI_FIX} - at `$.kind`",
        id="bottle-as-asgi",
    ),
    pytest.param(
        "",
        "handler = lambda: 'hi'\n",
        "edge.toml: kind = 'edge' expects handler(request); entrypoint 'main:handler' (main.py:1) takes "
        "(): give it the parameters of handler(request), or point `entrypoint` at the handler"
        " - at `$.entrypoint`",
        id="lambda-expression",
    ),
    pytest.param(
        'entrypoint = "main:Handler.handle"',
        "class Handler:\n    @staticmethod\n    def handle(event, context):\n        pass\n",
        "edge.toml: kind = 'edge' expects handler(request); entrypoint 'main:Handler.handle' (main.py:3) "
        f"takes (event, context): {LAMBDA_FIX}",
        id="staticmethod",
    ),
    pytest.param(
        'entrypoint = "main:Handler.handle"',
        "class Handler:\n    def handle(self, request):\n        pass\n",
        "edge.toml: kind = 'edge' expects handler(request); entrypoint 'main:Handler.handle' (main.py:2) "
        f"takes (self, request): {LAMBDA_FIX}",
        id="method-through-the-class",
    ),
]


@pytest.mark.parametrize(("manifest", "main", "message"), REFUSED)
def test_mismatched_entrypoint_is_refused(tmp_path: Path, manifest: str, main: str, message: str) -> None:
    with pytest.raises(bundle.BundleError) as caught:
        _validate(tmp_path, manifest, main)
    assert str(caught.value) == message


def test_package_entrypoint_module_is_read(tmp_path: Path) -> None:
    with pytest.raises(bundle.BundleError) as caught:
        _validate(
            tmp_path,
            'entrypoint = "app.web:handler"',
            "",
            {"app/__init__.py": "", "app/web/__init__.py": "\ndef handler(event, context):\n    pass\n"},
        )
    assert str(caught.value) == (
        "edge.toml: kind = 'edge' expects handler(request); entrypoint 'app.web:handler' "
        f"(app/web/__init__.py:2) takes (event, context): {LAMBDA_FIX}"
    )


PASSED = [
    pytest.param("", "def handler(request, extra=1, *, flag=False):\n    pass\n", id="defaults"),
    pytest.param("", "async def handler(*args):\n    pass\n", id="varargs"),
    pytest.param("", "def handler(request, /):\n    pass\n", id="positional-only"),
    pytest.param("", "import functools\n\n@functools.cache\ndef handler(a, b):\n    pass\n", id="decorated"),
    pytest.param("", "from handlers import handler\n", id="imported"),
    pytest.param("", "import handler\n", id="imported-module"),
    pytest.param("", "from handlers import *\n", id="star-import"),
    pytest.param("", "def __getattr__(name):\n    return print\n", id="module-getattr"),
    pytest.param("", "def setup():\n    global handler\n    handler = print\n", id="global"),
    pytest.param("", "globals()['handler'] = print\n", id="globals"),
    pytest.param("", "handler = make_handler()\n", id="unknown-call"),
    pytest.param("", "class handler:\n    def __init__(self, a, b):\n        pass\n", id="class"),
    pytest.param("", "if (handler := print):\n    pass\n", id="walrus"),
    pytest.param("", "for handler in [print]:\n    pass\n", id="for-target"),
    pytest.param(
        "",
        "try:\n    from fast import handler\nexcept ImportError:\n    def handler(a, b):\n        pass\n",
        id="one-binding-fits",
    ),
    pytest.param(
        'kind = "wsgi"\nentrypoint = "main:app"', "import flask\napp = flask.Flask(__name__)\n", id="flask"
    ),
    pytest.param('kind = "asgi"', "from fastapi import FastAPI\napp = FastAPI()\n", id="fastapi"),
    pytest.param('kind = "asgi"', "async def app(scope, receive, send):\n    pass\n", id="asgi"),
    pytest.param('kind = "wsgi"', "def app(environ, start_response):\n    pass\n", id="wsgi"),
    pytest.param('kind = "lambda"', "async def handler(event, context):\n    pass\n", id="lambda"),
    pytest.param(
        'entrypoint = "main:Handler.handle"',
        "class Handler:\n    @classmethod\n    def handle(cls, request):\n        pass\n",
        id="classmethod",
    ),
    pytest.param(
        'entrypoint = "main:Handler.handle"', "class Handler:\n    handle = print\n", id="attribute"
    ),
]


@pytest.mark.parametrize(("manifest", "main"), PASSED)
def test_what_cannot_be_faulted_passes(tmp_path: Path, manifest: str, main: str) -> None:
    _validate(tmp_path, manifest, main)


@pytest.mark.parametrize("directory", sorted(p for p in (REPO / "examples").iterdir() if p.is_dir()))
def test_examples_pass(directory: Path) -> None:
    bundle.validate(bundle.pack(directory), directory.name)


def _edge(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_")}
    return subprocess.run(
        [sys.executable, "-m", "edge", *args],
        capture_output=True,
        text=True,
        env={**clean, **env},
        cwd=REPO,
        timeout=120,
        check=False,
    )


def test_origin_refuses_a_mismatched_upload_before_publishing(tmp_path: Path) -> None:
    data = tmp_path / "origin"
    port = free_port()
    argv = [sys.executable, "-m", "edge", "origin", "--port", str(port), "--data", str(data)]
    with Server(argv, f"http://127.0.0.1:{port}/v1/health", log_path=tmp_path / "origin.log"):
        env = {
            "EDGE_ORIGIN": f"http://127.0.0.1:{port}",
            "EDGE_TOKEN": (data / "admin-token").read_text().strip(),
        }
        good = tmp_path / "good"
        good.mkdir()
        (good / "edge.toml").write_text('name = "good"\n')
        (good / "main.py").write_text("def handler(request):\n    return 'hi'\n")
        assert _edge("deploy", str(good), env=env).returncode == 0
        blobs = sorted(p.name for p in (data / "blobs").glob("??/*"))
        listed = _edge("ls", env=env)

        bad = tmp_path / "bad"
        bad.mkdir()
        (bad / "edge.toml").write_text('name = "bad"\nkind = "wsgi"\n')
        (bad / "main.py").write_text("async def app(environ, start_response):\n    pass\n")
        refused = _edge("deploy", str(bad), env=env)

        assert (refused.returncode, refused.stdout) == (1, "")
        assert refused.stderr.splitlines()[-1] == (
            f"error: 400 bad request: edge.toml: kind = 'wsgi' expects {WSGI}; entrypoint 'main:app' "
            f"(main.py:1) takes async (environ, start_response): {ASGI_FIX} - at `$.kind`"
        )
        assert sorted(p.name for p in (data / "blobs").glob("??/*")) == blobs
        after = _edge("ls", env=env)
        assert (after.returncode, after.stdout) == (0, listed.stdout)
        assert "good" in after.stdout
        assert "bad" not in after.stdout
