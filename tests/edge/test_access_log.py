"""The access log (one JSON line per request on `edge.access`, batched) and W3C `traceparent`:
passed to the handler's context, into the access line and the function's own log lines."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path
from typing import Any

import pytest
from node_harness import Node, NodeFactory, write_function

from edge.node import accesslog
from edge.node.accesslog import MAX_BATCH, AccessLine, AccessLog
from edge.node.tracing import trace_id_of
from edgefn import Context, Headers

TRACED = """
    def handler(request):
        print("hello from traced")
        context = request.context
        return {"traceparent": context.traceparent, "trace_id": context.trace_id}
"""

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
FIELDS = [
    "time",
    "function",
    "version",
    "method",
    "path",
    "status",
    "duration_ms",
    "cold",
    "cache",
    "request_id",
    "bytes",
    "trace_id",
    "client",
]


@pytest.fixture
def functions(tmp_path: Path) -> Path:
    root = tmp_path / "functions"
    write_function(root, "traced", TRACED)
    return root


def access_lines(node: Node) -> list[dict[str, Any]]:
    """The node log's access lines (bare JSON objects), in order."""
    return [json.loads(line) for line in node.log_text().splitlines() if line.startswith("{")]


def line_of(node: Node, request_id: str, timeout: float = 5.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [line for line in access_lines(node) if line["request_id"] == request_id]
        if found:
            [line] = found
            return line
        time.sleep(0.05)
    raise TimeoutError(f"no access line for {request_id} in {node.log}")


def test_an_access_line_per_request_with_every_field(start_node: NodeFactory, functions: Path) -> None:
    node = start_node(functions, env={"EDGE_ADMIN_PORT": "0"})
    version = node.get("/_edge/ready").json()["functions"]["traced"]["versions"][0]
    before = time.time()

    reply = node.get("/traced?x=1", headers={"traceparent": TRACEPARENT, "x-request-id": "req-1"})
    again = node.get("/traced?x=1", headers={"x-request-id": "req-2", "traceparent": "00-bad"})
    missing = node.get("/nowhere", method="POST", body=b"abc", headers={"x-request-id": "req-3"})

    assert reply.json() == {"traceparent": TRACEPARENT, "trace_id": TRACE_ID}
    assert again.json() == {"traceparent": "", "trace_id": ""}
    first, second, third = (line_of(node, f"req-{n}") for n in (1, 2, 3))
    assert list(first) == FIELDS
    assert before <= first["time"] <= second["time"] <= third["time"] <= time.time()
    assert 0 < first["duration_ms"] < 1000
    assert first["client"].startswith("127.0.0.1:")
    fixed = {key: first[key] for key in FIELDS if key not in ("time", "duration_ms", "client")}
    assert fixed == {
        "function": "traced",
        "version": version,
        "method": "GET",
        "path": "/traced",
        "status": 200,
        "cold": True,  # the first request its isolate served
        "cache": "MISS",
        "request_id": "req-1",
        "bytes": len(reply.body),
        "trace_id": TRACE_ID,
    }
    # Not storable, so the resource is passed to the function from now on (hit-for-pass).
    assert (second["cold"], second["cache"], second["trace_id"], second["bytes"]) == (
        False,
        "PASS",
        "",
        len(again.body),
    )
    assert {
        key: third[key] for key in ("function", "version", "method", "path", "status", "cache", "bytes")
    } == {
        "function": "",
        "version": "",
        "method": "POST",
        "path": "/nowhere",
        "status": 404,
        "cache": "-",
        "bytes": len(missing.body),
    }
    # The function's own line carries the trace id too.
    assert f"[traced req-1 trace={TRACE_ID}] hello from traced" in node.log_text()
    assert "[traced req-2] hello from traced" in node.log_text()
    # Node endpoints are not logged.
    assert not [line for line in access_lines(node) if line["path"].startswith("/_edge/")]


@pytest.mark.parametrize("env", [{"EDGE_ACCESS_LOG": "false"}, {"EDGE_LOG_LEVEL": "warning"}])
def test_the_access_log_can_be_turned_off(
    start_node: NodeFactory, functions: Path, env: dict[str, str]
) -> None:
    node = start_node(functions, env={"EDGE_ADMIN_PORT": "0", **env})
    for _ in range(3):
        assert node.get("/traced").status == 200
    time.sleep(accesslog.FLUSH_AFTER_S * 5)
    assert access_lines(node) == []


@pytest.mark.parametrize(
    ("header", "trace_id"),
    [
        (TRACEPARENT, TRACE_ID),
        (f" {TRACEPARENT} ", TRACE_ID),  # optional whitespace around a header value
        ("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-later", TRACE_ID),  # a later version
        ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x", ""),  # version 00 has 4 fields
        ("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", ""),  # version ff is invalid
        ("00-00000000000000000000000000000000-00f067aa0ba902b7-01", ""),  # all-zero trace id
        ("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", ""),  # all-zero parent id
        ("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", ""),  # upper case
        ("00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01", ""),  # 31 digits
        ("", ""),
    ],
)
def test_traceparent_validation_is_the_same_on_the_host_and_in_the_guest(header: str, trace_id: str) -> None:
    assert trace_id_of(header.encode()) == trace_id
    context = Context("f", "v1", "req", 0.0, Headers(((b"traceparent", header.encode()),)))
    assert (context.trace_id, context.traceparent) == (trace_id, header.strip() if trace_id else "")


def test_a_context_without_headers_has_no_trace() -> None:
    context = Context("f", "v1", "req", 0.0)
    assert (context.traceparent, context.trace_id) == ("", "")


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def line(number: int) -> AccessLine:
    return AccessLine(
        1.5, "f", "v1", "GET", "/f", 200, 0.25, False, "MISS", f"r{number}", 2, "", "127.0.0.1:1"
    )


def test_lines_are_written_in_batches() -> None:
    logger = logging.getLogger("test.access")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    records = Records()
    logger.addHandler(records)

    async def scenario() -> list[list[str]]:
        log = AccessLog(logger)
        seen = []
        for number in range(3):
            log.add(line(number))
        seen.append(list(records.messages))
        await asyncio.sleep(accesslog.FLUSH_AFTER_S * 2)
        seen.append(list(records.messages))
        records.messages.clear()
        for number in range(MAX_BATCH):
            log.add(line(number))
        seen.append(list(records.messages))  # a full batch goes at once
        return seen

    try:
        waiting, flushed, full = asyncio.run(scenario())
    finally:
        logger.removeHandler(records)
    assert waiting == []
    [text] = flushed
    assert [json.loads(part)["request_id"] for part in text.split("\n")] == ["r0", "r1", "r2"]
    assert json.loads(text.split("\n")[0]) == {
        "time": 1.5,
        "function": "f",
        "version": "v1",
        "method": "GET",
        "path": "/f",
        "status": 200,
        "duration_ms": 0.25,
        "cold": False,
        "cache": "MISS",
        "request_id": "r0",
        "bytes": 2,
        "trace_id": "",
        "client": "127.0.0.1:1",
    }
    [text] = full
    assert len(text.split("\n")) == MAX_BATCH


def test_a_logger_above_info_turns_lines_off() -> None:
    logger = logging.getLogger("test.access.quiet")
    logger.setLevel(logging.WARNING)
    assert AccessLog(logger).enabled is False
    assert AccessLog(logging.getLogger("test.access"), enabled=False).enabled is False
