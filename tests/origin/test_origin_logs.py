"""The origin's log buffer (pure) and its two routes over a real origin: nodes post batches,
admins read pages after a cursor, long-polling."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

import msgspec
import pytest
from origin_harness import Origin, running_origin

from edge.control.client import OriginClient, OriginError
from edge.control.messages import LogBatch, LogLine, LogPage
from edge.origin.logs import MAX_LINE_CHARS, LogBuffer, LogFilter

ALL = LogFilter()


def line(text: str, function: str = "fn", at: float = 100.0) -> LogLine:
    return LogLine(time=at, function=function, line=text, node_id="claimed-by-the-node")


def texts(page: LogPage) -> list[str]:
    return [line.line for line in page.lines]


# The buffer, without sockets.


def test_lines_get_increasing_cursors_and_the_node_id_of_the_url() -> None:
    buffer = LogBuffer()
    buffer.add("n1", LogBatch(lines=[line("a"), line("b")]))
    buffer.add("n2", LogBatch(lines=[line("c")]))
    page = buffer.page(0, ALL)
    assert (texts(page), page.next, page.dropped) == (["a", "b", "c"], 3, {})
    assert [line.node_id for line in page.lines] == ["n1", "n1", "n2"]
    after = buffer.page(2, ALL)
    assert (texts(after), after.next) == (["c"], 3)
    assert (texts(buffer.page(3, ALL)), buffer.page(3, ALL).next) == ([], 3)


def test_filters_by_function_node_and_time_and_the_cursor_passes_what_was_not_wanted() -> None:
    buffer = LogBuffer()
    buffer.add("n1", LogBatch(lines=[line("a", "fn", 10.0), line("b", "other", 20.0)]))
    buffer.add("n1-4242", LogBatch(lines=[line("c", "fn", 30.0)]))  # a worker of n1 (several workers)
    buffer.add("n10", LogBatch(lines=[line("d", "fn", 40.0)]))
    assert texts(buffer.page(0, LogFilter(function="fn"))) == ["a", "c", "d"]
    assert texts(buffer.page(0, LogFilter(node="n1"))) == ["a", "b", "c"]
    assert texts(buffer.page(0, LogFilter(node="n1-4242"))) == ["c"]
    assert texts(buffer.page(0, LogFilter(since=20.0))) == ["b", "c", "d"]
    nothing = buffer.page(0, LogFilter(function="missing"))
    assert (nothing.lines, nothing.next) == ([], 4)


def test_a_page_stops_at_its_limit_and_the_next_one_goes_on_from_there() -> None:
    buffer = LogBuffer()
    buffer.add("n1", LogBatch(lines=[line(str(i)) for i in range(5)]))
    first = buffer.page(0, ALL, limit=2)
    second = buffer.page(first.next, ALL, limit=2)
    third = buffer.page(second.next, ALL, limit=2)
    assert [texts(first), texts(second), texts(third)] == [["0", "1"], ["2", "3"], ["4"]]
    assert third.next == 5


def test_the_oldest_lines_go_past_the_bound_and_a_reader_behind_them_is_told_how_many_it_missed() -> None:
    buffer = LogBuffer(max_lines=3)
    buffer.add("n1", LogBatch(lines=[line(str(i)) for i in range(5)]))
    assert texts(buffer.page(0, ALL)) == ["2", "3", "4"]
    # Cursors 1 and 2 went: a reader that had read up to cursor 1 missed one line ("1").
    behind = buffer.page(1, ALL)
    assert (texts(behind), behind.dropped) == (["2", "3", "4"], {"": 1})
    assert buffer.page(2, ALL).dropped == {}


def test_the_bound_counts_characters_too_and_long_lines_are_cut() -> None:
    buffer = LogBuffer(max_chars=10)
    buffer.add("n1", LogBatch(lines=[line("12345"), line("67890"), line("abc")]))
    assert texts(buffer.page(0, ALL)) == ["67890", "abc"]
    roomy = LogBuffer()
    roomy.add("n1", LogBatch(lines=[line("x" * (MAX_LINE_CHARS + 10))]))
    assert [len(text) for text in texts(roomy.page(0, ALL))] == [MAX_LINE_CHARS]


def test_drops_a_node_reports_add_up_per_node() -> None:
    buffer = LogBuffer()
    buffer.add("n1", LogBatch(dropped=5))
    buffer.add("n2", LogBatch(lines=[line("a")], dropped=1))
    buffer.add("n1", LogBatch(lines=[line("b")], dropped=2))
    assert buffer.page(0, ALL).dropped == {"n1": 7, "n2": 1}


def test_a_cursor_from_before_the_origin_restarted_reads_every_line_kept() -> None:
    buffer = LogBuffer()
    buffer.add("n1", LogBatch(lines=[line("a"), line("b")]))
    page = buffer.page(9000, ALL)
    assert (texts(page), page.next, page.dropped) == (["a", "b"], 2, {})


def test_a_waiting_reader_wakes_when_a_wanted_line_arrives_and_not_before() -> None:
    async def scenario() -> tuple[LogPage, float, LogPage]:
        buffer = LogBuffer()
        loop = asyncio.get_running_loop()
        loop.call_later(0.05, buffer.add, "n1", LogBatch(lines=[line("unwanted", "other")]))
        loop.call_later(0.15, buffer.add, "n1", LogBatch(lines=[line("wanted")]))
        start = loop.time()
        page = await buffer.wait_page(0, LogFilter(function="fn"), wait=5.0)
        waited = loop.time() - start
        empty = await buffer.wait_page(page.next, ALL, wait=0.05)
        return page, waited, empty

    page, waited, empty = asyncio.run(scenario())
    assert (texts(page), page.next) == (["wanted"], 2)
    assert 0.1 < waited < 2.0
    assert (empty.lines, empty.next) == ([], 2)


# The routes, over a real origin.


def get_page(origin: Origin, query: dict[str, Any], token: str | None = None) -> LogPage:
    client = origin.client(token or origin.admin_token)
    _, data = client.request("GET", "/v1/logs?" + urllib.parse.urlencode(query), timeout=30)
    return msgspec.json.decode(data, type=LogPage)


def post(origin: Origin, token: str, node_id: str, batch: object) -> int:
    client = origin.client(token)
    status, _ = client.request("POST", f"/v1/nodes/{node_id}/logs", msgspec.json.encode(batch))
    return status


@pytest.fixture(scope="module")
def node_token(origin: Origin) -> str:
    return origin.token("node")


def test_a_node_posts_lines_and_an_admin_reads_them(origin: Origin, node_token: str) -> None:
    batch = LogBatch(lines=[line("hello", "route-read"), line("skip", "route-other")], dropped=3)
    assert post(origin, node_token, "route-n1", batch) == 204
    page = get_page(origin, {"function": "route-read"})
    assert [(line.node_id, line.function, line.line) for line in page.lines] == [
        ("route-n1", "route-read", "hello")
    ]
    assert page.dropped["route-n1"] == 3
    assert get_page(origin, {"function": "route-read", "after": page.next}).lines == []


def test_only_nodes_post_and_only_admins_read(origin: Origin, node_token: str) -> None:
    with pytest.raises(OriginError) as refused:
        post(origin, origin.admin_token, "route-n1", LogBatch())
    assert refused.value.status == 403
    assert refused.value.message == "POST /v1/nodes/{node_id}/logs needs the node role; this token has admin"
    with pytest.raises(OriginError) as refused:
        get_page(origin, {}, node_token)
    assert refused.value.message == "GET /v1/logs needs the admin role; this token has node"
    with pytest.raises(OriginError) as refused:
        OriginClient(origin.url, None).request("GET", "/v1/logs")
    assert (refused.value.status, refused.value.message) == (401, "missing bearer token")


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"after": "-1"}, "query `after`: Expected an integer >= 0, got '-1'"),
        ({"after": "1.5"}, "query `after`: Expected an integer >= 0, got '1.5'"),
        ({"since": "yesterday"}, "query `since`: Expected a number >= 0, got 'yesterday'"),
        ({"wait": "nan"}, "query `wait`: Expected a number >= 0, got 'nan'"),
        ({"limit": "0"}, "query `limit`: Expected 1 to 5000 lines, got 0"),
    ],
)
def test_a_bad_query_is_refused_naming_it(origin: Origin, query: dict[str, str], message: str) -> None:
    with pytest.raises(OriginError) as refused:
        get_page(origin, query)
    assert (refused.value.status, refused.value.message) == (400, message)


def test_a_bad_batch_is_refused_naming_the_field(origin: Origin, node_token: str) -> None:
    with pytest.raises(OriginError) as refused:
        post(origin, node_token, "route-n1", {"lines": [{"function": "f", "line": "x"}]})
    assert (refused.value.status, refused.value.message) == (
        400,
        "request body: Object missing required field `time` - at `$.lines[0]`",
    )
    with pytest.raises(OriginError) as refused:
        post(origin, node_token, "route-n1", {"dropped": -1})
    assert refused.value.message == "request body: Expected `$.dropped` >= 0, got -1"
    with pytest.raises(OriginError) as refused:
        post(origin, node_token, "-bad", LogBatch())
    assert refused.value.message == (
        "node id: Expected 1-128 letters, digits, '.', '_' or '-' (not first), got '-bad'"
    )


def test_a_reader_waits_for_the_next_line_and_gets_it_at_once(origin: Origin, node_token: str) -> None:
    start = get_page(origin, {"function": "route-wait"}).next
    answers: list[tuple[float, LogPage]] = []

    def read() -> None:
        page = get_page(origin, {"function": "route-wait", "after": start, "wait": 10})
        answers.append((time.monotonic(), page))

    reader = threading.Thread(target=read)
    reader.start()
    time.sleep(0.3)
    assert post(origin, node_token, "route-n2", LogBatch(lines=[line("not this one", "route-else")])) == 204
    time.sleep(0.2)
    assert not answers  # an unwanted line does not end the wait
    sent = time.monotonic()
    assert post(origin, node_token, "route-n2", LogBatch(lines=[line("now", "route-wait")])) == 204
    reader.join(15)
    [(answered, page)] = answers
    assert texts(page) == ["now"]
    assert answered - sent < 1.0


def test_the_origin_keeps_the_newest_50000_lines(tmp_path: Path) -> None:
    with running_origin(tmp_path / "data") as origin:
        token = origin.token("node")
        for start in range(0, 51_000, 1000):
            batch = LogBatch(lines=[line(f"l{i}", at=float(i)) for i in range(start, start + 1000)])
            assert post(origin, token, "bound-n1", batch) == 204
        first = get_page(origin, {"limit": 5000})
        assert (first.lines[0].line, len(first.lines), first.next) == ("l1000", 5000, 6000)
        # A reader that had read up to cursor 500 missed the 500 lines after it that went.
        behind = get_page(origin, {"after": 500, "limit": 1})
        assert (texts(behind), behind.dropped) == (["l1000"], {"": 500})
        last = get_page(origin, {"after": 50_999})
        assert (texts(last), last.next) == (["l50999"], 51_000)
        assert json.loads(msgspec.json.encode(last))["dropped"] == {}
