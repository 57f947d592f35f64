"""The first run: `edge --version`, bare `edge`, errors that say how to fix them, `make run` installing
the runtime only, and `edge up` reporting success only when both of its servers are up and its own,
with a banner whose edge command works."""

from __future__ import annotations

import http.server
import importlib.metadata
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from node_harness import write_function

from loadtest._servers import Server, free_port

REPO = Path(__file__).resolve().parents[2]


def edge(*args: str, cwd: Path = REPO, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    """Run `edge ARGS...` with no EDGE_* variables."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_")}
    return subprocess.run(
        [sys.executable, "-m", "edge", *args],
        capture_output=True,
        text=True,
        env=clean,
        cwd=cwd,
        timeout=timeout,
        check=False,
    )


def test_version() -> None:
    result = edge("--version")
    version = importlib.metadata.version("edge-functions")
    assert (result.returncode, result.stdout, result.stderr) == (0, f"edge {version}\n", "")


def test_bare_edge_prints_the_help() -> None:
    result = edge()
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.startswith("usage: edge [-h] [--version] COMMAND ...\n")
    for command in ("up", "dev", "deploy", "node", "origin", "logs"):
        assert re.search(rf"^    {command} ", result.stdout, re.M), command


def test_an_unreachable_origin_says_how_to_point_at_one() -> None:
    port = free_port()
    result = edge("ls", "--origin", f"http://127.0.0.1:{port}")
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == (
        f"error: cannot reach the origin at http://127.0.0.1:{port}: Connection refused; is it running?"
        " Start one (`edge up`, or `edge origin`), or point EDGE_ORIGIN or --origin at it\n"
    )


def test_a_bad_token_says_which_token_to_pass_and_where_it_is(tmp_path: Path) -> None:
    port = free_port()
    argv = [sys.executable, "-m", "edge", "origin", "--port", str(port), "--data", str(tmp_path / "origin")]
    with Server(argv, f"http://127.0.0.1:{port}/v1/health", log_path=tmp_path / "origin.log"):
        url = f"http://127.0.0.1:{port}"
        result = edge("ls", "--origin", url, "--token", "nope")
        assert (result.returncode, result.stdout) == (1, "")
        assert result.stderr == (
            "error: 401 unauthorized: unknown bearer token; pass an admin token with --token or EDGE_TOKEN"
            " (`edge up` keeps its admin token in .edge/up/origin/admin-token, `edge origin` in"
            " .edge/origin/admin-token); a node takes a node token with --token-file\n"
        )
        created = edge("origin", "token", "create", "--role", "node", "--data", str(tmp_path / "origin"))
        result = edge("ls", "--origin", url, "--token", created.stdout.strip())
        assert result.stderr == (
            "error: 403 forbidden: GET /v1/functions needs the admin role; this token has node; this"
            " token's role cannot do that: pass an admin token with --token or EDGE_TOKEN (`edge up`"
            " keeps its admin token in .edge/up/origin/admin-token)\n"
        )


def test_make_run_installs_the_runtime_only(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    # Under `make test` (CI) the outer make's flags would add "Entering directory" lines.
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
    run = subprocess.run(
        ["make", "--no-print-directory", "-n", "run", f"VENV={venv}"],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=True,
        env=env,
    )
    assert f"{venv}/bin/python -m pip install --quiet -e .\n" in run.stdout
    assert "[test]" not in run.stdout
    assert run.stdout.endswith(f"{venv}/bin/edge up\n")
    test = subprocess.run(
        ["make", "--no-print-directory", "-n", "test", f"VENV={venv}"],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=True,
        env=env,
    )
    assert f"{venv}/bin/python -m pip install --quiet -e '.[test]'\n" in test.stdout


class _Health(http.server.BaseHTTPRequestHandler):
    """Someone else's server on the origin's port, answering /v1/health like an origin would."""

    def do_GET(self) -> None:
        body = b'{"status":"ok","revision":0}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def busy_port() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_up_with_its_origin_port_taken_fails_without_the_banner(tmp_path: Path, busy_port: int) -> None:
    (tmp_path / "empty").mkdir()
    result = edge(
        "up",
        "--functions",
        "empty",
        "--data",
        "up",
        "--port",
        str(free_port()),
        "--origin-port",
        str(busy_port),
        cwd=tmp_path,
    )
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == (
        f"error: --origin-port {busy_port}: cannot listen on 127.0.0.1:{busy_port}: Address already in use"
        " (another `edge up`, origin or node?); stop it or pass another --origin-port\n"
    )


def test_up_shows_the_log_tail_of_a_server_that_exits(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "up" / "origin" / "origin.lock").mkdir(parents=True)  # the origin cannot take its lock
    ports = ["--port", str(free_port()), "--origin-port", str(free_port())]
    result = edge("up", "--functions", "empty", "--data", "up", *ports, cwd=tmp_path)
    assert (result.returncode, result.stdout) == (1, "")
    data = tmp_path / "up" / "origin"
    assert result.stderr == (
        "error: `edge origin` exited with 1; the end of up/origin.log:\n"
        f"  error: {data}: cannot prepare the data directory: [Errno 21] Is a directory:"
        f" '{data}/origin.lock'\n"
    )


def _wait_for_line(log: Path, line: str, process: subprocess.Popen[bytes], timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while True:
        text = log.read_text()
        if line in text:
            return text
        assert process.poll() is None, text + (log.with_suffix(".err").read_text())
        assert time.monotonic() < deadline, text
        time.sleep(0.1)


def test_up_banner_names_an_edge_command_that_works(tmp_path: Path) -> None:
    write_function(tmp_path / "functions", "hello", "def handler(request):\n    return 'hi'\n")
    write_function(tmp_path, "more", "def handler(request):\n    return 'more'\n")
    port, origin_port = free_port(), free_port()
    out, err = tmp_path / "up.out", tmp_path / "up.err"
    clean = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_")}
    argv = [sys.executable, "-m", "edge", "up", "--functions", "functions", "--data", "up"]
    argv += ["--port", str(port), "--origin-port", str(origin_port)]
    with out.open("wb") as stdout, err.open("wb") as stderr:
        process = subprocess.Popen(argv, stdout=stdout, stderr=stderr, cwd=tmp_path, env=clean)
    try:
        text = _wait_for_line(out, "Ctrl-C stops both.\n", process, timeout=90)
        command = re.search(r"^the edge command: (\S+)", text, re.M)
        assert command is not None, text
        executable = command[1]
        if executable != "edge":  # not on PATH: the absolute path of this virtualenv's script
            assert executable == str(Path(sys.prefix) / "bin" / "edge")
            assert os.access(executable, os.X_OK)
            assert text.count(f" (or `. {Path(sys.prefix) / 'bin' / 'activate'}` puts `edge` on PATH)") == 1
        deploy = re.search(r"^deploy more: (.*) DIR$", text, re.M)
        assert deploy is not None, text
        assert deploy[1] == (
            f"EDGE_ORIGIN=http://127.0.0.1:{origin_port} EDGE_TOKEN=$(cat up/origin/admin-token)"
            f" {executable} deploy"
        )
        # The line as a user would paste it into a shell, DIR filled in.
        shell = subprocess.run(
            ["sh", "-c", f"{deploy[1]} {shlex.quote(str(tmp_path / 'more'))}"],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env=clean,
            timeout=90,
            check=False,
        )
        assert (shell.returncode, shell.stderr) == (0, ""), shell.stdout
        assert re.fullmatch(r"deployed more [0-9a-f]{12} at revision 2: [0-9a-f]{12} 100%\n", shell.stdout)
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
