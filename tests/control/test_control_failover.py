"""A node's client over several origins: it moves on when one cannot answer, and stays there."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from edge.control.client import OriginClient, OriginError, OriginUnreachable
from edge.control.failover import FailoverClient, origin_client
from loadtest._servers import free_port


class _Origin(ThreadingHTTPServer):
    """Answers GET (and POST) /v1/health with `status` and its revision, or hangs up; counts requests."""

    def __init__(self, status: int, revision: int) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.status = status
        self.revision = revision
        self.hits = 0
        self.hang_up = False
        self.url = f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: _Origin

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.do_GET()

    def do_GET(self) -> None:
        self.server.hits += 1
        if self.server.hang_up:  # the request came in; close without a word
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        body = (
            json.dumps({"status": "ok", "revision": self.server.revision}).encode()
            if self.server.status == 200
            else json.dumps({"error": f"broken {self.server.revision}"}).encode()
        )
        self.send_response(self.server.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def origins() -> Iterator[list[_Origin]]:
    started = [_Origin(200, 1), _Origin(200, 2)]
    threads = [threading.Thread(target=origin.serve_forever, daemon=True) for origin in started]
    for thread in threads:
        thread.start()
    try:
        yield started
    finally:
        for origin in started:
            origin.shutdown()
            origin.server_close()


def test_one_url_is_a_plain_client_and_several_fail_over() -> None:
    assert type(origin_client("http://a:1", None)) is OriginClient
    client = origin_client("http://a:1, http://b:2", None)
    assert isinstance(client, FailoverClient)
    assert [c.url for c in client.clients] == ["http://a:1", "http://b:2"]


def test_an_empty_entry_is_refused() -> None:
    with pytest.raises(ValueError) as refused:
        origin_client("http://a:1,,http://b:2", None)
    assert str(refused.value) == (
        "origin URL: Expected http(s)://host[:port], or several separated by commas,"
        " got 'http://a:1,,http://b:2'"
    )


def test_an_unreachable_origin_is_passed_over_and_the_next_one_kept(origins: list[_Origin]) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    client = origin_client(f"{dead},{origins[0].url}", None, timeout=5)
    assert client.health().revision == 1
    assert client.url == origins[0].url
    assert client.health().revision == 1  # no second try of the dead one first
    assert origins[0].hits == 2


def test_a_5xx_moves_on_and_a_4xx_does_not(origins: list[_Origin]) -> None:
    origins[0].status = 503
    client = origin_client(f"{origins[0].url},{origins[1].url}", None, timeout=5)
    assert client.health().revision == 2
    origins[1].status = 404
    with pytest.raises(OriginError) as refused:
        client.health()
    assert (refused.value.status, origins[0].hits) == (404, 1)  # B's own answer: A is not asked


def test_when_none_answers_every_reason_is_given() -> None:
    dead = [f"http://127.0.0.1:{free_port()}" for _ in range(2)]
    client = origin_client(",".join(dead), None, timeout=5)
    with pytest.raises(OriginUnreachable) as unreachable:
        client.health()
    assert str(unreachable.value).count("cannot reach the origin at") == 2
    assert dead[0] in str(unreachable.value) and dead[1] in str(unreachable.value)


def _post(client: OriginClient) -> int:
    _, data = client.request("POST", "/v1/health", b"{}")
    revision: int = json.loads(data)["revision"]
    return revision


def test_a_change_goes_to_the_next_origin_when_the_first_cannot_have_received_it(
    origins: list[_Origin],
) -> None:
    """The admin CLI's client (resend=False): connection refused means nothing was sent."""
    dead = f"http://127.0.0.1:{free_port()}"
    client = origin_client(f"{dead},{origins[1].url}", None, timeout=5, resend=False)
    assert _post(client) == 2
    assert client.url == origins[1].url


def test_a_change_that_reached_an_origin_is_never_sent_to_another(origins: list[_Origin]) -> None:
    """Sent, then no answer: the origin may have applied it (a rollback twice goes back two)."""
    origins[0].hang_up = True
    client = origin_client(f"{origins[0].url},{origins[1].url}", None, timeout=5, resend=False)
    with pytest.raises(OriginUnreachable) as unanswered:
        _post(client)
    assert unanswered.value.sent
    assert str(unanswered.value) == (
        f"cannot reach the origin at {origins[0].url}: Remote end closed connection without response;"
        " is it running? Start one (`edge up`, or `edge origin`), or point EDGE_ORIGIN or --origin at"
        " it (after the POST was sent: the origin may have applied it, so it was not sent to the next"
        " origin; look before sending it again, e.g. with `edge versions NAME`)"
    )
    assert (origins[0].hits, origins[1].hits) == (1, 0)
    # A read changes nothing: it moves on.
    assert client.health().revision == 2
    assert (origins[0].hits, origins[1].hits) == (2, 1)


def test_a_change_answered_5xx_is_the_answer_and_a_node_still_resends(origins: list[_Origin]) -> None:
    origins[0].status = 500
    admin = origin_client(f"{origins[0].url},{origins[1].url}", None, timeout=5, resend=False)
    with pytest.raises(OriginError) as failed:
        _post(admin)
    assert (failed.value.status, origins[1].hits) == (500, 0)
    # The node's client (the default) sends its heartbeats and registrations on.
    origins[0].hang_up = True
    node = origin_client(f"{origins[0].url},{origins[1].url}", None, timeout=5)
    assert _post(node) == 2
