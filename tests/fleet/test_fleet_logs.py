"""`edge logs` over a real fleet: nodes ship what functions print (and access lines) to the
origin, and the CLI prints, filters and follows them."""

from __future__ import annotations

import asyncio
import http.client
import json
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest
from fleet_harness import REPO, Fleet, clean_env, run_edge, wait_for

from edge.cli.logs import format_line, parse_since
from edge.control.messages import LogBatch, LogLine
from edge.node.logship import MAX_BODY_BYTES, MAX_LINE_CHARS, MAX_LINES, LogShipper
from edge.node.settings import NodeSettings
from loadtest._servers import free_port

TALK = """\
def handler(request):
    print("said", request.path)
    return "ok"
"""

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"

CHATTY = """\
def handler(request):
    count = int(request.path.rsplit("/", 1)[1])
    for i in range(count):
        print("line", i)
    return "done"
"""


def deploy(origin_env: dict[str, str], root: Path, name: str, code: str) -> None:
    directory = root / name
    directory.mkdir()
    (directory / "edge.toml").write_text(f'name = "{name}"\n')
    (directory / "main.py").write_text(code)
    result = run_edge("deploy", str(directory), "--wait", env=origin_env)
    assert result.returncode == 0, result.stderr


def log_lines(env: dict[str, str], *args: str) -> list[dict[str, Any]]:
    """`edge logs --json ARGS...` as parsed lines, in time order (they come in the order they reached
    the origin, which across nodes need not be the order they were printed in)."""
    result = run_edge("logs", "--json", *args, env=env)
    assert (result.returncode, result.stderr) == (0, ""), result
    return sorted((json.loads(line) for line in result.stdout.splitlines()), key=lambda line: line["time"])


def printed(lines: list[dict[str, Any]]) -> list[str]:
    """What functions printed, without the lines of the requests that waited for them to serve."""
    return [
        line["line"] for line in lines if line["stream"] == "stdout" and not line["line"].endswith("/ready")
    ]


class Follower:
    """`edge logs -f ARGS...` as a subprocess; its stdout lines arrive in `lines` as read."""

    def __init__(self, env: dict[str, str], *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "edge", "logs", "-f", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
            env=clean_env(env),
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.seen.append(line.rstrip("\n"))
            self.lines.put(line.rstrip("\n"))

    def expect(self, needle: str, timeout: float) -> str:
        """The first line (from now on) containing `needle`, within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                line = self.lines.get(timeout=remaining)
            except queue.Empty:
                break
            if needle in line:
                return line
        raise AssertionError(f"`edge logs -f` printed no line with {needle!r} within {timeout} s")

    def close(self) -> str:
        """Stop it (SIGINT, as Ctrl-C) and return its stderr."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        self._reader.join(10)
        assert self.process.stdout is not None and self.process.stderr is not None
        errors = self.process.stderr.read()
        self.process.stdout.close()
        self.process.stderr.close()
        return errors


@pytest.fixture
def follower_factory() -> Iterator[list[Follower]]:
    started: list[Follower] = []
    yield started
    for follower in started:
        if not follower.process.stdout.closed:  # type: ignore[union-attr]
            follower.close()


def test_logs_follow_filters_and_since_across_two_nodes(
    fleet: Fleet, tmp_path: Path, follower_factory: list[Follower]
) -> None:
    origin = fleet.start_origin()
    first, second = fleet.start_node(), fleet.start_node()
    env = origin.env()
    deploy(env, tmp_path, "talk", TALK)
    deploy(env, tmp_path, "other", TALK)
    for node in (first, second):
        wait_for(lambda node=node: node.serves(b"ok", "/talk/ready"), 20, "talk served")  # type: ignore[misc]

    follower = Follower(env, "talk")
    follower_factory.append(follower)
    # The follower is reading once it prints a line sent after it started.
    assert first.get("/talk/warm-up").status == 200
    follower.expect("said /talk/warm-up", 10)

    sent = time.monotonic()
    assert second.get("/talk/from-second").status == 200
    line = follower.expect("said /talk/from-second", 2.0)
    assert time.monotonic() - sent < 2.0
    # TIME NODE FUNCTION [REQUEST-ID] LINE
    when, node_id, function, request_id, text = line.split(" ", 4)
    assert datetime.fromisoformat(when).tzinfo is not None
    assert (node_id, function, text) == (second.node_id, "talk", "said /talk/from-second")
    assert request_id.startswith("[") and request_id.endswith("]") and len(request_id) > 2
    assert second.get("/other/not-followed").status == 200
    assert first.get("/talk/after-other").status == 200
    # The follower asked for `talk` only: the line of `other` never reaches it.
    follower.expect("said /talk/after-other", 2.0)
    assert "Traceback" not in follower.close()
    assert follower.process.returncode == 130
    assert follower.seen and all(line.split(" ")[2] == "talk" for line in follower.seen), follower.seen

    everything = log_lines(env)
    said = printed(everything)
    # Lines of two nodes interleave in the order they reached the origin (each node ships on its
    # own clock), not in the order they were printed: compare the sets here, each node's order below.
    assert sorted(said) == sorted(
        ["said /talk/warm-up", "said /talk/from-second", "said /other/not-followed", "said /talk/after-other"]
    )
    # Each node's lines carry that node's id, the function's version and the request id.
    by_text = {line["line"]: line for line in everything if line["stream"] == "stdout"}
    assert by_text["said /talk/from-second"]["node_id"] == second.node_id
    assert by_text["said /talk/warm-up"]["node_id"] == first.node_id
    assert len(by_text["said /talk/warm-up"]["version"]) == 64

    assert printed(log_lines(env, "--node", second.node_id)) == [
        "said /talk/from-second",
        "said /other/not-followed",
    ]
    assert printed(log_lines(env, "other")) == ["said /other/not-followed"]
    assert printed(log_lines(env, "talk", "--node", first.node_id)) == [
        "said /talk/warm-up",
        "said /talk/after-other",
    ]

    time.sleep(1.1)
    boundary = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    assert first.get("/talk/late").status == 200
    wait_for(lambda: printed(log_lines(env))[-1:] == ["said /talk/late"], 5, "the late line at the origin")
    assert printed(log_lines(env, "--since", "10m")) == [*said, "said /talk/late"]
    assert printed(log_lines(env, "--since", boundary)) == ["said /talk/late"]


def test_access_lines_are_shipped_beside_what_the_function_printed(fleet: Fleet, tmp_path: Path) -> None:
    origin = fleet.start_origin()
    node = fleet.start_node()
    env = origin.env()
    deploy(env, tmp_path, "talk", TALK)
    wait_for(lambda: node.serves(b"ok", "/talk/ready"), 20, "talk served")
    assert node.get("/talk/one").status == 200
    assert node.get("/nothing-here").status == 404

    def shipped() -> list[dict[str, Any]] | None:
        lines = log_lines(env, "talk")
        return lines if "said /talk/one" in printed(lines) and lines[-1]["stream"] == "access" else None

    lines = wait_for(shipped, 5, "the access line of /talk/one")
    said = next(line for line in lines if line["line"] == "said /talk/one")
    access = [
        line for line in lines if line["request_id"] == said["request_id"] and line["stream"] == "access"
    ]
    assert len(access) == 1
    assert (access[0]["node_id"], access[0]["function"], access[0]["version"]) == (
        node.node_id,
        "talk",
        said["version"],
    )
    # The line itself is the access log's JSON object.
    fields = json.loads(access[0]["line"])
    assert (fields["function"], fields["status"], fields["request_id"]) == ("talk", 200, said["request_id"])

    # A request's W3C trace id travels with its lines.
    connection = http.client.HTTPConnection("127.0.0.1", node.port, timeout=10)
    connection.request("GET", "/talk/traced", headers={"traceparent": f"00-{TRACE_ID}-00f067aa0ba902b7-01"})
    assert connection.getresponse().read() == b"ok"
    connection.close()

    def traced() -> list[dict[str, Any]] | None:
        lines = [line for line in log_lines(env, "talk") if line["trace_id"] == TRACE_ID]
        return lines if len(lines) == 2 else None

    assert {line["stream"] for line in wait_for(traced, 5, "the traced lines")} == {"stdout", "access"}


def test_a_node_that_cannot_reach_the_origin_keeps_the_newest_lines_and_the_drop_count_arrives(
    fleet: Fleet, tmp_path: Path
) -> None:
    origin = fleet.start_origin()
    node = fleet.start_node()
    env = origin.env()
    deploy(env, tmp_path, "chatty", CHATTY)
    wait_for(lambda: node.serves(b"done", "/chatty/1"), 20, "chatty served")
    # Everything of that request reached the origin (what it printed, its access line): nothing
    # older than the outage is left in the node's buffer.
    wait_for(
        lambda: [line["stream"] for line in log_lines(env)] == ["stdout", "access"], 5, "the first lines"
    )

    origin.stop()
    # 12,000 lines and an access line while the origin is away: the node keeps the newest 10,000.
    assert node.get("/chatty/12000").status == 200
    origin.start()

    def arrived() -> subprocess.CompletedProcess[str] | None:
        result = run_edge("logs", "chatty", "--json", env=env)
        return result if result.stdout.count("\n") == 10_000 else None

    result = wait_for(arrived, 20, "the kept lines after the origin came back")
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    # The newest lines, in order: 2,001 printed lines went, the access line came last.
    assert printed(lines) == [f"line {i}" for i in range(2_001, 12_000)]
    assert lines[-1]["stream"] == "access"
    assert (result.returncode, result.stderr) == (
        0,
        f"edge logs: 2001 lines dropped on node {node.node_id} (it could not reach the origin)\n",
    )
    text = run_edge("logs", "chatty", env=env)
    assert text.stdout.splitlines()[-2].endswith(
        f" {node.node_id} chatty [{lines[-1]['request_id']}] line 11999"
    )


def test_edge_logs_says_how_to_fix_an_unreachable_origin_and_a_wrong_token(
    fleet: Fleet, tmp_path: Path
) -> None:
    origin = fleet.start_origin()
    env = origin.env()
    wrong = run_edge("logs", env={**env, "EDGE_TOKEN": "not-a-token"})
    assert wrong.returncode == 1
    assert "401" in wrong.stderr and "EDGE_TOKEN" in wrong.stderr
    node_token = run_edge("logs", env={**env, "EDGE_TOKEN": origin.node_token()})
    assert node_token.returncode == 1
    assert "GET /v1/logs needs the admin role; this token has node" in node_token.stderr
    origin.stop()
    gone = run_edge("logs", env=env)
    assert gone.returncode == 1
    assert origin.url in gone.stderr and "EDGE_ORIGIN" in gone.stderr
    assert gone.stdout == ""


# The CLI's parsing and format, without an origin.


def test_since_takes_a_duration_or_an_rfc3339_time_and_refuses_anything_else() -> None:
    assert parse_since("90s", now=lambda: 1000.0) == 910.0
    assert parse_since("10m", now=lambda: 1000.0) == 400.0
    assert parse_since("1.5h", now=lambda: 10_000.0) == 4600.0
    assert parse_since("2026-12-01T09:30:00Z") == datetime(2026, 12, 1, 9, 30, tzinfo=UTC).timestamp()
    assert parse_since("2026-12-01T10:30:00+01:00") == parse_since("2026-12-01T09:30:00Z")
    result = run_edge("logs", "--since", "2026-12-01T09:30:00")
    assert result.returncode == 2
    assert result.stderr.endswith(
        "edge logs: error: argument --since: Expected a duration (30s, 10m, 1h, 2d) or an RFC 3339 time"
        " with its offset (2026-12-01T09:30:00Z), got '2026-12-01T09:30:00'\n"
    )
    result = run_edge("logs", "Bad_Name")
    assert result.stderr.endswith(
        "edge logs: error: argument name: Expected a function name (1-63 lowercase letters, digits, '-' or"
        " '_'), got 'Bad_Name'\n"
    )


def test_a_line_prints_as_time_node_function_request_id_and_text() -> None:
    line = LogLine(time=1796169373.5, function="talk", line="said hi", request_id="r1", node_id="n1")
    assert format_line(line) == "2026-12-01T23:56:13.500Z n1 talk [r1] said hi"
    line.request_id = ""
    assert format_line(line) == "2026-12-01T23:56:13.500Z n1 talk said hi"


# The node's shipper in this process: its bounds, and the last lines at shutdown.


def shipper_for(url: str, max_lines: int = MAX_LINES, token: str = "token") -> LogShipper:
    return LogShipper(NodeSettings(origin=url, token=token), "n1", max_lines=max_lines, clock=lambda: 1.0)


def test_a_full_shipper_keeps_the_newest_lines_and_counts_the_rest_also_when_a_post_fails() -> None:
    shipper = shipper_for(f"http://127.0.0.1:{free_port()}", max_lines=3)
    for i in range(5):
        shipper.add("stdout", "fn", "v1", "r1", f"line {i}", "")
    assert ([line.line for line in shipper._lines], shipper.dropped) == (["line 2", "line 3", "line 4"], 2)
    # Nobody listens: the batch goes back in front, in order, and the count waits for the next post.
    assert asyncio.run(shipper._ship_once()) is False
    assert ([line.line for line in shipper._lines], shipper.dropped) == (["line 2", "line 3", "line 4"], 2)
    shipper.add("stdout", "fn", "v1", "r1", "x" * (MAX_LINE_CHARS + 1), "trace")
    assert [len(line.line) for line in shipper._lines] == [6, 6, MAX_LINE_CHARS]
    assert (shipper._lines[-1].trace_id, shipper.dropped) == ("trace", 3)


def test_a_batch_stays_under_the_origins_body_limit_however_its_lines_escape() -> None:
    shipper = shipper_for("http://127.0.0.1:1")
    for i in range(40):
        shipper.add("stdout", "fn", "v1", "r1", f"{i:02d}" + "\x01" * (MAX_LINE_CHARS - 2), "")
    batch = shipper._take()
    body = shipper._encode(batch)
    assert (
        len(body) <= MAX_BODY_BYTES < len(msgspec.json.encode(LogBatch(lines=[*batch.lines, *batch.lines])))
    )
    sent = [line.line[:2] for line in batch.lines]
    left = [line.line[:2] for line in shipper._lines]
    assert sent + left == [f"{i:02d}" for i in range(40)]


def test_stopping_ships_what_is_left(fleet: Fleet) -> None:
    origin = fleet.start_origin()
    shipper = shipper_for(origin.url, token=origin.node_token())

    async def run() -> None:
        await shipper.start()
        await asyncio.sleep(0)
        for i in range(3):
            shipper.add("stdout", "last-words", "v1", "", f"bye {i}", "")
        await shipper.stop()

    asyncio.run(run())
    assert printed(log_lines(origin.env(), "last-words")) == ["bye 0", "bye 1", "bye 2"]
