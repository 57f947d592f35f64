"""`edge init` writes a function of each kind whose own test passes under pytest and which a real
node serves; `edge invoke` calls functions through a real node."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from node_harness import NodeFactory, write_function

from loadtest._servers import free_port

REPO = Path(__file__).resolve().parents[2]
KINDS = ["edge", "lambda", "openfaas", "asgi", "wsgi"]


def edge(
    *args: str, env: dict[str, str] | None = None, stdin: bytes | None = None, cwd: Path = REPO
) -> subprocess.CompletedProcess[bytes]:
    """Run `edge ARGS...` with no EDGE_* variables but `env`."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_")}
    return subprocess.run(
        [sys.executable, "-m", "edge", *args],
        capture_output=True,
        env={**clean, **(env or {})},
        input=stdin,
        cwd=cwd,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("kind", KINDS)
def test_init_writes_a_function_whose_test_passes(tmp_path: Path, kind: str) -> None:
    result = edge("init", f"fn-{kind}", "--kind", kind, "--dir", str(tmp_path))
    directory = tmp_path / f"fn-{kind}"
    assert (result.returncode, result.stderr) == (0, b"")
    assert result.stdout.decode() == (
        f"created {directory}/ ({kind}): edge.toml, main.py, test_main.py\n"
        f"  test:   cd {directory} && python -m pytest\n"
        f"  serve:  edge node --functions {tmp_path}\n"
        f"  call:   edge invoke fn-{kind} --path '?name=Ada'\n"
        f"  deploy: edge deploy {directory}\n"
    )
    assert sorted(p.name for p in directory.iterdir()) == ["edge.toml", "main.py", "test_main.py"]
    manifest = (directory / "edge.toml").read_text()
    assert f'name = "fn-{kind}"\nkind = "{kind}"\n' in manifest
    tested = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "error"],
        capture_output=True,
        text=True,
        cwd=directory,
        timeout=60,
        check=False,
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "1 passed" in tested.stdout


def test_init_functions_serve_on_a_node_and_answer_invoke(tmp_path: Path, start_node: NodeFactory) -> None:
    for kind in KINDS:
        assert edge("init", f"fn-{kind}", "--kind", kind, "--dir", str(tmp_path)).returncode == 0
    node = start_node(tmp_path)
    url = f"http://127.0.0.1:{node.port}"
    for kind in KINDS:
        reply = node.get(f"/fn-{kind}?name=Ada")
        assert (reply.status, reply.json()) == (200, {"message": "hello Ada"}), kind
        assert reply.headers["content-type"] == "application/json", kind
        invoked = edge("invoke", f"fn-{kind}", "--path", "?name=Bo", env={"EDGE_NODE": url})
        assert (invoked.returncode, json.loads(invoked.stdout), invoked.stderr) == (
            0,
            {"message": "hello Bo"},
            b"",
        ), kind


def test_init_refuses_an_existing_directory(tmp_path: Path) -> None:
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "mine.txt").write_text("keep")
    result = edge("init", "taken", "--dir", str(tmp_path))
    assert (result.returncode, result.stdout) == (1, b"")
    assert result.stderr.decode() == (
        f"error: {tmp_path}/taken: already exists; edge init writes a new directory:"
        " pick another NAME or --dir\n"
    )
    assert [p.name for p in (tmp_path / "taken").iterdir()] == ["mine.txt"]


@pytest.mark.parametrize("name", ["Hello", "_x", "a/b", "x" * 64])
def test_init_refuses_a_name_the_manifest_refuses(tmp_path: Path, name: str) -> None:
    result = edge("init", name, "--dir", str(tmp_path))
    assert (result.returncode, result.stderr.decode()) == (
        1,
        f"error: NAME: Expected a name of 1-63 lowercase letters, digits, '-' or '_', got {name!r}"
        " - at `$.name`\n",
    )
    assert list(tmp_path.iterdir()) == []


def test_init_refuses_an_unknown_kind(tmp_path: Path) -> None:
    result = edge("init", "x", "--kind", "django", "--dir", str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.decode().splitlines()[-1] == (
        "edge init: error: argument --kind: invalid choice: 'django' "
        "(choose from 'edge', 'lambda', 'openfaas', 'asgi', 'wsgi')"
    )


ECHO = """
    def handler(request):
        return {
            "method": request.method,
            "path": request.path,
            "query": request.query_string,
            "body": request.text(),
            "type": request.headers.get("content-type"),
            "tag": request.headers.getall("x-tag"),
        }
"""

LAMBDA = """
    def handler(event, context):
        if "rawPath" in event:
            return {"statusCode": 201, "body": "over http"}
        return {"event": event, "function": context.function_name}
"""


@pytest.fixture
def node_url(tmp_path: Path, start_node: NodeFactory) -> str:
    write_function(tmp_path / "functions", "echo", ECHO)
    write_function(tmp_path / "functions", "orders", LAMBDA, manifest='kind = "lambda"\n')
    return f"http://127.0.0.1:{start_node(tmp_path / 'functions').port}"


def test_invoke(node_url: str, tmp_path: Path) -> None:
    body = tmp_path / "body.txt"
    body.write_bytes(b"from a file")
    plain = edge("invoke", "echo", "--node", node_url)
    assert (plain.returncode, json.loads(plain.stdout)["method"]) == (0, "GET")
    posted = edge(
        "invoke", "echo", "--node", node_url, "--data", "@" + str(body), "--path", "/x?y=1", "-H", "X-Tag: a",
        "-H", "x-tag:b", "-H", "Content-Type: text/plain",
    )  # fmt: skip
    assert (posted.returncode, json.loads(posted.stdout)) == (
        0,
        {"method": "POST", "path": "/echo/x", "query": "y=1", "body": "from a file", "type": "text/plain",
         "tag": ["a", "b"]},
    )  # fmt: skip
    piped = edge("invoke", "echo", "-X", "PUT", "-d", "@-", env={"EDGE_NODE": node_url}, stdin=b"piped")
    seen = json.loads(piped.stdout)
    assert (piped.returncode, seen["method"], seen["body"]) == (0, "PUT", "piped")


def test_invoke_verbose_and_failure_exit(node_url: str) -> None:
    missing = edge("invoke", "nothere", "-v", "--node", node_url)
    assert missing.returncode == 1
    assert json.loads(missing.stdout)["error"] == "no function serves /nothere"
    lines = missing.stderr.decode().splitlines()
    assert lines[0] == "404 Not Found"
    assert "content-type: application/json" in [line.lower() for line in lines[1:]]


def test_invoke_lambda_api(node_url: str) -> None:
    invoked = edge("invoke", "orders", "--lambda", "--data", '{"id": 7}', "--node", node_url)
    assert (invoked.returncode, json.loads(invoked.stdout)) == (0, {"event": {"id": 7}, "function": "orders"})
    empty = edge("invoke", "orders", "--lambda", "--node", node_url)
    assert json.loads(empty.stdout) == {"event": {}, "function": "orders"}
    over_http = edge("invoke", "orders", "--node", node_url)
    assert (over_http.returncode, over_http.stdout) == (0, b"over http")
    wrong_kind = edge("invoke", "echo", "--lambda", "--node", node_url)
    assert wrong_kind.returncode == 1
    assert json.loads(wrong_kind.stdout)["error"] == (
        'function echo is kind = "edge"; the invoke API calls kind = "lambda"'
    )


BAD_INVOKE_ARGUMENTS = [
    (
        ["--lambda", "--data", "not json"],
        "error: --data: Expected a JSON event for --lambda, got 'not json'"
        " (Expecting value: line 1 column 1 (char 0))",
    ),
    (
        ["--lambda", "--path", "/x"],
        "error: --lambda calls the invoke API (POST, no path): leave out --method and --path",
    ),
    (["--path", "x"], "error: --path: Expected a path starting with '/' or '?', got 'x'"),
    (["-H", "novalue"], "error: --header: Expected `Name: value`, got 'novalue'"),
    (
        ["--data", "@/nonexistent/file"],
        "error: --data @/nonexistent/file: cannot read /nonexistent/file: No such file or directory",
    ),
    (
        ["--node", "127.0.0.1:8080"],
        "error: --node: Expected a node URL like http://127.0.0.1:8080, got '127.0.0.1:8080'",
    ),
]


@pytest.mark.parametrize(("args", "message"), BAD_INVOKE_ARGUMENTS)
def test_invoke_refuses_bad_arguments(args: list[str], message: str) -> None:
    result = edge("invoke", "fn", *args)
    assert (result.returncode, result.stdout, result.stderr.decode()) == (1, b"", message + "\n")


def test_invoke_says_which_node_it_could_not_reach() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = edge("invoke", "hello", env={"EDGE_NODE": url})
    assert (result.returncode, result.stdout) == (1, b"")
    assert result.stderr.decode() == (
        f"error: cannot reach the node at {url}/hello: [Errno 111] Connection refused; start one (`edge up`,"
        " `make run` or `edge node --functions DIR`) or set EDGE_NODE or --node\n"
    )
