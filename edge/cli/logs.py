"""`edge logs [NAME] [-f] [--node ID] [--since 10m|RFC3339] [--json]`: the fleet's logs via the origin."""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
import urllib.parse
from collections.abc import Callable
from datetime import UTC, datetime

import msgspec

from edge.cli._abort import abort
from edge.cli._origin import add_origin_options, origin_client
from edge.control.client import ControlError, OriginClient, OriginError, OriginUnreachable
from edge.control.messages import LogLine, LogPage

__all__ = ["format_line", "parse_since", "register"]

# How long one follow request waits at the origin for a line (the origin caps it at its max_poll_s).
FOLLOW_WAIT_S = 25.0
PAGE_LINES = 1000
# While following, how long to wait before asking an origin that did not answer again.
RETRY_S = 1.0

_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
_NODE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `edge logs`."""
    parser = subparsers.add_parser(
        "logs", help="print function and access logs from every node (through the origin)"
    )
    parser.add_argument("name", nargs="?", type=_function_name, help="only this function's lines")
    parser.add_argument("-f", "--follow", action="store_true", help="keep printing new lines until Ctrl-C")
    parser.add_argument(
        "--node", type=_node_id, metavar="ID", help="only lines from this node (see `edge nodes`)"
    )
    parser.add_argument(
        "--since",
        type=parse_since,
        metavar="WHEN",
        help="only lines from this long ago (30s, 10m, 1h, 2d) or since this RFC 3339 time"
        " (e.g. 2026-12-01T09:30:00Z)",
    )
    parser.add_argument("--json", action="store_true", help="print each line as a JSON object")
    add_origin_options(parser)
    parser.set_defaults(func=_logs)


def _function_name(value: str) -> str:
    if not _NAME.fullmatch(value):
        raise argparse.ArgumentTypeError(
            f"Expected a function name (1-63 lowercase letters, digits, '-' or '_'), got {value!r}"
        )
    return value


def _node_id(value: str) -> str:
    if not _NODE_ID.fullmatch(value):
        raise argparse.ArgumentTypeError(
            f"Expected a node id (letters, digits, '.', '_' or '-', as `edge nodes` shows), got {value!r}"
        )
    return value


def parse_since(value: str, now: Callable[[], float] = time.time) -> float:
    """`--since`: a duration back from now (30s, 10m, 1h, 2d) or an RFC 3339 time, as a unix time."""
    duration = _DURATION.fullmatch(value)
    if duration:
        return now() - float(duration[1]) * _UNIT_S[duration[2]]
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise argparse.ArgumentTypeError(
            "Expected a duration (30s, 10m, 1h, 2d) or an RFC 3339 time with its offset"
            f" (2026-12-01T09:30:00Z), got {value!r}"
        )
    return moment.timestamp()


def format_line(line: LogLine) -> str:
    """`TIME NODE FUNCTION [REQUEST-ID] LINE`, the time in UTC to the millisecond."""
    when = datetime.fromtimestamp(line.time, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    request = f" [{line.request_id}]" if line.request_id else ""
    return f"{when} {line.node_id} {line.function}{request} {line.line}"


def _client(args: argparse.Namespace) -> OriginClient:
    return origin_client(args)


def _hint(exc: ControlError) -> str:
    """The error with how to fix it, unless the client's message already says."""
    message = str(exc)
    if isinstance(exc, OriginUnreachable) and "EDGE_ORIGIN" not in message:
        message += "; is the origin running? Point to it with EDGE_ORIGIN or --origin"
    elif isinstance(exc, OriginError) and exc.status in (401, 403) and "EDGE_TOKEN" not in message:
        message += (
            "; use an admin token (EDGE_TOKEN or --token; `edge up` keeps one in .edge/up/origin/admin-token)"
        )
    return message


class _Reader:
    """Reads pages after a cursor and prints them; tells once per increase of a node's drops."""

    def __init__(self, client: OriginClient, args: argparse.Namespace) -> None:
        self.client = client
        self.as_json: bool = args.json
        query = {"function": args.name or "", "node": args.node or "", "limit": PAGE_LINES}
        if args.since is not None:
            query["since"] = repr(args.since)
        self.query = {key: value for key, value in query.items() if value != ""}
        self.after = 0
        self.told: dict[str, int] = {}

    def page(self, wait: float) -> int:
        """Fetch and print the next page; returns how many lines it had."""
        query = urllib.parse.urlencode({**self.query, "after": self.after, "wait": wait})
        _, data = self.client.request("GET", f"/v1/logs?{query}", timeout=wait + self.client.timeout)
        try:
            page = msgspec.json.decode(data, type=LogPage)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            raise ControlError(
                f"the origin's answer to GET /v1/logs is not what was expected: {exc}"
            ) from None
        out = sys.stdout
        for line in page.lines:
            out.write((msgspec.json.encode(line).decode() if self.as_json else format_line(line)) + "\n")
        out.flush()
        self._tell_drops(page.dropped)
        self.after = page.next
        return len(page.lines)

    def _tell_drops(self, dropped: dict[str, int]) -> None:
        for node, count in sorted(dropped.items()):
            before = self.told.get(node, 0)
            if node == "":  # the origin's bound, counted per reading
                print(
                    f"edge logs: {count} lines dropped by the origin's buffer before they were read",
                    file=sys.stderr,
                )
            elif count > before:
                print(
                    f"edge logs: {count - before} lines dropped on node {node}"
                    " (it could not reach the origin)",
                    file=sys.stderr,
                )
                self.told[node] = count
        sys.stderr.flush()


def _logs(args: argparse.Namespace) -> int:
    reader = _Reader(_client(args), args)
    try:
        while reader.page(0.0) == PAGE_LINES:
            pass
        if not args.follow:
            return 0
        _follow(reader)
    except ControlError as exc:
        abort(_hint(exc))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`edge logs | head`): stop quietly, and do not complain at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def _follow(reader: _Reader) -> None:
    unreachable = False
    while True:
        try:
            reader.page(FOLLOW_WAIT_S)
        except OriginUnreachable as exc:
            if not unreachable:
                print(f"edge logs: {exc}; trying again every {RETRY_S:g} s", file=sys.stderr, flush=True)
                unreachable = True
            time.sleep(RETRY_S)
            continue
        if unreachable:
            print("edge logs: the origin answers again", file=sys.stderr, flush=True)
            unreachable = False
