"""`edge dev DIR...` as a real process: a function reloads within a second of an edit while another
keeps its isolate; a broken edit answers 503 until fixed; requirements.txt lands in .deps/ (from a
wheel built here, no network); every request is printed."""

from __future__ import annotations

import base64
import hashlib
import re
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from node_harness import request, write_function

from loadtest._servers import Server, free_port

COUNTER = """
    count = 0

    def handler(request):
        global count
        count += 1
        return str(count)
"""


Dev = Callable[..., tuple[int, Path]]


@pytest.fixture
def dev(tmp_path: Path) -> Iterator[Dev]:
    """Start `edge dev DIR...` (port, log); every one is stopped on teardown."""
    servers: list[Server] = []

    def start(*directories: Path) -> tuple[int, Path]:
        port = free_port()
        log = tmp_path / f"dev-{port}.log"
        argv = [sys.executable, "-m", "edge", "dev", *map(str, directories), "--port", str(port)]
        server = Server(argv, f"http://127.0.0.1:{port}/_edge/ready", log_path=log)
        servers.append(server)
        server.start(60)
        return port, log

    yield start
    for server in servers:
        server.stop()


def _until(port: int, path: str, expected: bytes, timeout: float) -> float:
    """Seconds until GET path answers `expected` (fails past `timeout`)."""
    started = time.monotonic()
    while True:
        reply = request(port, path)
        if reply.body == expected:
            return time.monotonic() - started
        assert time.monotonic() - started < timeout, (reply.status, reply.body)
        time.sleep(0.02)


def test_an_edit_reloads_only_its_function_within_a_second(dev: Dev, tmp_path: Path) -> None:
    root = tmp_path / "functions"
    hello = write_function(root, "hello", "def handler(request):\n    return 'one'\n")
    write_function(root, "counter", COUNTER)
    port, log = dev(root)
    assert request(port, "/hello").body == b"one"
    assert [request(port, "/counter").body for _ in range(2)] == [b"1", b"2"]

    (hello / "main.py").write_text("def handler(request):\n    return 'two'\n")  # same size: mtime alone
    assert _until(port, "/hello", b"two", timeout=5) < 1.0
    # The other function's isolate was untouched: its module state counts on.
    assert request(port, "/counter").body == b"3"

    (hello / "main.py").write_text("def handler(request:\n")
    deadline = time.monotonic() + 1.0
    while (reply := request(port, "/hello")).status != 503:
        assert time.monotonic() < deadline, reply
        time.sleep(0.02)
    error = reply.json()["error"]
    assert error.startswith("function hello failed to load: importing module 'main' raised SyntaxError: ")
    assert request(port, "/counter").body == b"4"
    (hello / "main.py").write_text("def handler(request):\n    return 'fixed'\n")
    assert _until(port, "/hello", b"fixed", timeout=5) < 1.0

    text = log.read_text()
    assert re.search(r"^GET /hello 200 \d+\.\d ms  \(hello [0-9a-f]{12}, cold, cache MISS\)$", text, re.M), (
        text
    )
    assert re.search(r"^GET /counter 200 \d+\.\d ms  \(counter [0-9a-f]{12}, cache PASS\)$", text, re.M), text
    assert re.search(r"^GET /hello 503 \d+\.\d ms  \(hello -\)$", text, re.M), text
    assert "function hello: " in text and " changed, reloading\n" in text
    assert text.count("function counter: serving version") == 1


def _wheel(directory: Path, version: str) -> Path:
    """A pure-Python wheel of the package `tinydep` whose VALUE is `version`."""
    name = f"tinydep-{version}"
    files = {
        "tinydep/__init__.py": f"VALUE = {version!r}\n",
        f"{name}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: tinydep\nVersion: {version}\n",
        f"{name}.dist-info/WHEEL": (
            "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(text.encode())}")
    record.append(f"{name}.dist-info/RECORD,,")
    files[f"{name}.dist-info/RECORD"] = "\n".join(record) + "\n"
    wheel = directory / f"{name}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, text in files.items():
            archive.writestr(path, text)
    return wheel


def test_requirements_are_installed_into_deps_and_reinstalled_on_change(dev: Dev, tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    _wheel(wheels, "1.0")
    _wheel(wheels, "2.0")
    options = f"--no-index\n--find-links {wheels}\n"
    function = write_function(
        tmp_path,
        "uses-dep",
        "import tinydep\n\ndef handler(request):\n    return tinydep.VALUE\n",
        files={"requirements.txt": options + "tinydep==1.0\n"},
    )
    port, log = dev(function)
    assert request(port, "/uses-dep").body == b"1.0"
    assert (function / ".deps" / "tinydep" / "__init__.py").read_text() == "VALUE = '1.0'\n"

    (function / "requirements.txt").write_text(options + "tinydep==2.0\n")
    _until(port, "/uses-dep", b"2.0", timeout=30)
    assert (function / ".deps" / "tinydep" / "__init__.py").read_text() == "VALUE = '2.0'\n"
    # Nothing left over from the install (the node's bytecode cache of main.py aside).
    left = sorted(p.name for p in function.iterdir() if p.name != "__pycache__")
    assert left == [".deps", "edge.toml", "main.py", "requirements.txt"]
    assert "function uses-dep: installed requirements.txt into .deps" in log.read_text()


def test_refuses_a_directory_without_functions(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "edge", "dev", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == (
        f"error: {tmp_path}: no edge.toml here or in a subdirectory;"
        " `edge init NAME` makes a function directory\n"
    )
