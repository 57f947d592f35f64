"""The origin client through a network that loses things: connect limits, keep-alive, long-poll grace."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from edge.control.client import KEEPALIVE, USER_TIMEOUT_MS, OriginClient, OriginUnreachable


@pytest.fixture
def full_backlog() -> Iterator[int]:
    """A port whose listen queue is full, so a new connection's SYN is dropped (it hangs)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    fillers = []
    # Linux completes a few handshakes without accept() (backlog + 1); later SYNs are dropped.
    for _ in range(8):
        filler = socket.socket()
        filler.settimeout(0.2)
        fillers.append(filler)
        try:
            filler.connect(("127.0.0.1", port))
        except TimeoutError:
            break
    else:
        raise AssertionError("the listen queue never filled")
    try:
        yield port
    finally:
        for filler in fillers:
            filler.close()
        server.close()


def test_connecting_gives_up_after_connect_timeout_not_the_read_timeout(full_backlog: int) -> None:
    client = OriginClient(f"http://127.0.0.1:{full_backlog}", None, timeout=30.0, connect_timeout=0.3)
    started = time.monotonic()
    with pytest.raises(OriginUnreachable) as caught:
        client.health()
    took = time.monotonic() - started
    assert 0.3 <= took < 2.0, took
    assert str(caught.value).startswith(
        f"cannot reach the origin at http://127.0.0.1:{full_backlog}: timed out"
    )


class _Silent:
    """A server that reads requests and answers only `/v1/health`; other requests get nothing."""

    def __init__(self) -> None:
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(8)
        self.port = self.server.getsockname()[1]
        self.peers: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                peer, _ = self.server.accept()
            except OSError:
                return
            self.peers.append(peer)
            threading.Thread(target=self._talk, args=(peer,), daemon=True).start()

    def _talk(self, peer: socket.socket) -> None:
        while True:
            try:
                data = peer.recv(65536)
            except OSError:
                return
            if not data:
                return
            if data.startswith(b"GET /v1/health"):
                body = b'{"status":"ok","revision":0}'
                peer.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))

    def close(self) -> None:
        self.server.close()
        for peer in self.peers:
            peer.close()


@pytest.fixture
def silent() -> Iterator[_Silent]:
    server = _Silent()
    try:
        yield server
    finally:
        server.close()


def test_a_long_poll_whose_answer_never_comes_ends_soon_after_the_poll_timeout(silent: _Silent) -> None:
    client = OriginClient(f"http://127.0.0.1:{silent.port}", None, timeout=30.0, keep_alive=True)
    client.poll_grace_s = 0.3
    started = time.monotonic()
    with pytest.raises(OriginUnreachable, match="timed out"):
        client.sync(0, "node-1", timeout=0.2)
    took = time.monotonic() - started
    assert 0.5 <= took < 2.0, took  # poll timeout + grace, not + the 30 s call timeout


def test_connections_to_the_origin_probe_with_keepalive_and_bound_unacked_data(silent: _Silent) -> None:
    client = OriginClient(f"http://127.0.0.1:{silent.port}", None, keep_alive=True, connect_timeout=1.0)
    assert client.health().status == "ok"
    [conn] = client._idle  # the kept-alive connection the next call reuses
    sock = conn.sock
    assert sock is not None
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
    idle, interval, count = KEEPALIVE
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == idle
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL) == interval
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == count
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == USER_TIMEOUT_MS
    assert sock.gettimeout() == client.timeout  # connect_timeout limited only the connect
    client.close()
