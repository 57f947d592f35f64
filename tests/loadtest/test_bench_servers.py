"""The benchmark's extra servers start and answer as `make bench` expects."""

from __future__ import annotations

import json
import shutil
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from node_harness import write_function

from loadtest._servers import free_port
from loadtest.bench import BROWSER_HEADERS, bare_server, ceiling_server, node_server, run_wrk


@pytest.mark.parametrize("factory", ["instant", "next_iteration"])
def test_ceiling_server_answers_hello_through_the_node_app(factory: str) -> None:
    port = free_port()
    with ceiling_server(port, factory):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/hello", timeout=10) as response:
            assert response.status == 200
            assert response.read() == b"hello world"
            # The node app ran: it routed the request, gave it an id and asked the cache.
            assert response.headers["x-request-id"]
            assert response.headers["x-cache"] == "MISS"
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/nothing-here", timeout=10)
        missing.value.close()
        assert missing.value.code == 404


@pytest.mark.parametrize("interface", ["asgi", "rsgi"])
def test_the_bare_baselines_answer_hello_world_on_each_interface(interface: str) -> None:
    port = free_port()
    with bare_server(port, interface), urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as got:
        assert got.status == 200
        assert got.headers["content-type"] == "text/plain; charset=utf-8"
        assert got.read() == b"hello world"


def test_wrk_sends_the_browser_headers(tmp_path: Path) -> None:
    """The browser-headers rows reach the server with BROWSER_HEADERS (15 headers with Host)."""
    wrk = shutil.which("wrk")
    if wrk is None:
        pytest.fail("wrk is not installed (make bench installs it): `apt-get install wrk`")
    root = tmp_path / "functions"
    write_function(root, "seen", SEEN)
    port = free_port()
    with node_server(port, root):
        run_wrk(wrk, f"http://127.0.0.1:{port}/seen", 1, 1, 1, headers=BROWSER_HEADERS)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/seen?last", timeout=10) as response:
            seen = json.loads(response.read())
    expected = {header.split(": ", 1)[0].lower(): header.split(": ", 1)[1] for header in BROWSER_HEADERS}
    assert {name: seen[name] for name in expected} == expected
    assert len(seen) == len(BROWSER_HEADERS) + 1  # and Host


# Remembers the headers of the last request but one (the `?last` request asks for them).
SEEN = """
    last = {}

    def handler(request):
        if request.query_string == "last":
            return last
        last.clear()
        last.update((name, value) for name, value in request.headers.items())
        return "ok"
"""
