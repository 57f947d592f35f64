"""The cache's RFC behaviour over a real node (`edge node`, granian in a subprocess, HTTP on loopback).

One node for the module, its cache named by EDGE_CACHE__NAME; each test uses its own paths. Nothing
sleeps: responses that must go stale at once say max-age=0 or no-cache.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator

import pytest
from node_harness import Node, write_function

from loadtest._servers import Server, free_port

# Counts full answers and 304s per path; answers If-None-Match itself, as a framework would.
VALIDATING = """
    from edgefn import Response

    counts = {}

    def handler(request):
        path = request.path
        if path.endswith("/count"):
            return counts
        mode = path.rsplit("/", 1)[-1]
        seen = counts.setdefault(path, {"full": 0, "not_modified": 0, "conditions": []})
        condition = request.headers.get("if-none-match")
        seen["conditions"].append(condition)
        if mode == "validated":
            headers = {"etag": '"v1"', "cache-control": "max-age=0", "x-generation": "1"}
            headers["content-type"] = "text/html; charset=utf-8"
            if condition == '"v1"':
                seen["not_modified"] += 1
                headers = {"etag": '"v1"', "cache-control": "max-age=0"}
                headers["x-generation"] = str(seen["not_modified"] + 1)
                return Response(b"", status=304, headers=headers)  # gets a default content-type
            seen["full"] += 1
            return Response(b"payload", headers=headers)
        seen["full"] += 1
        if mode == "cdn":
            return Response(b"cdn", headers={"cache-control": "no-store", "cdn-cache-control": "max-age=600"})
        if mode == "digits":
            return Response(b"0123456789", headers={"cache-control": "max-age=600", "etag": '"d1"'})
        if mode == "cookie":
            return Response(b"hi", headers=[("cache-control", "public, max-age=600"), ("set-cookie", "id=1")])
        return Response(b"plain")
"""


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    root = tmp_path_factory.mktemp("cache-rfc") / "functions"
    write_function(root, "rfc", VALIDATING)
    port = free_port()
    log = root.parent / "node.log"
    argv = [sys.executable, "-m", "edge", "node", "--functions", str(root), "--port", str(port)]
    server = Server(
        argv, f"http://127.0.0.1:{port}/_edge/ready", env={"EDGE_CACHE__NAME": "node-a"}, log_path=log
    )
    server.start(60)
    try:
        yield Node(port, log, server)
    finally:
        server.stop()


def counts(node: Node, path: str) -> dict[str, object]:
    return node.get("/rfc/count").json()[path]  # type: ignore[no-any-return]


def test_a_stale_entry_is_revalidated_and_the_304_updates_it(node: Node) -> None:
    first = node.get("/rfc/a/validated")
    assert (first.status, first.body, first.headers["x-cache"]) == (200, b"payload", "MISS")
    assert first.headers["cache-status"] == "node-a; fwd=uri-miss; fwd-status=200; stored; ttl=0"
    second = node.get("/rfc/a/validated")
    assert (second.status, second.body, second.headers["x-cache"]) == (200, b"payload", "REVALIDATED")
    assert second.headers["cache-status"] == "node-a; fwd=stale; fwd-status=304; stored; ttl=0"
    assert second.headers["x-generation"] == "2"  # the 304's field replaced the stored one
    third = node.get("/rfc/a/validated")
    assert (third.body, third.headers["x-generation"]) == (b"payload", "3")
    assert third.headers["content-type"] == "text/html; charset=utf-8"  # the stored body's type
    assert counts(node, "/rfc/a/validated") == {
        "full": 1,
        "not_modified": 2,
        "conditions": [None, '"v1"', '"v1"'],
    }


def test_a_client_s_conditional_request_gets_304_from_the_revalidated_entry(node: Node) -> None:
    node.get("/rfc/b/validated")
    reply = node.get("/rfc/b/validated", headers={"If-None-Match": '"v1"'})
    assert (reply.status, reply.body, reply.headers["x-cache"]) == (304, b"", "REVALIDATED")
    assert counts(node, "/rfc/b/validated")["full"] == 1


def test_cdn_cache_control_wins_over_cache_control_and_is_forwarded(node: Node) -> None:
    miss = node.get("/rfc/cdn")
    hit = node.get("/rfc/cdn")
    assert (miss.headers["x-cache"], hit.headers["x-cache"], hit.body) == ("MISS", "HIT", b"cdn")
    assert re.fullmatch(r"node-a; hit; ttl=(600|599)", hit.headers["cache-status"])
    assert (hit.headers["cache-control"], hit.headers["cdn-cache-control"]) == ("no-store", "max-age=600")
    assert counts(node, "/rfc/cdn")["full"] == 1


def test_ranges_are_answered_from_the_stored_response(node: Node) -> None:
    node.get("/rfc/digits")
    part = node.get("/rfc/digits", headers={"Range": "bytes=2-4"})
    assert (part.status, part.body, part.headers["content-range"], part.headers["x-cache"]) == (
        206,
        b"234",
        "bytes 2-4/10",
        "HIT",
    )
    assert part.headers["content-length"] == "3"
    beyond = node.get("/rfc/digits", headers={"Range": "bytes=20-"})
    assert (beyond.status, beyond.headers["content-range"]) == (416, "bytes */10")
    stale_tag = node.get("/rfc/digits", headers={"Range": "bytes=2-4", "If-Range": '"old"'})
    assert (stale_tag.status, stale_tag.body) == (200, b"0123456789")
    assert counts(node, "/rfc/digits")["full"] == 1


def test_a_cookie_goes_to_the_client_that_caused_the_miss_only(node: Node) -> None:
    miss = node.get("/rfc/cookie")
    hit = node.get("/rfc/cookie")
    assert (miss.headers.get("set-cookie"), hit.headers["x-cache"], hit.headers.get("set-cookie")) == (
        "id=1",
        "HIT",
        None,
    )


def test_only_if_cached_without_a_stored_response_is_504(node: Node) -> None:
    reply = node.get("/rfc/never/plain", headers={"Cache-Control": "only-if-cached"})
    assert (reply.status, reply.headers["cache-status"]) == (504, "node-a; detail=only-if-cached")
    assert "/rfc/never/plain" not in node.get("/rfc/count").json()
