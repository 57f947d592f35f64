"""The benchmark's extra servers start and answer as `make bench` expects."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest

from loadtest._servers import free_port
from loadtest.bench import ceiling_server


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
