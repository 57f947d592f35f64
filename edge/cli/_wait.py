"""`--wait`: follow the nodes' reports until each node seen lately applied a change, or failed."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from typing import NamedTuple

from edge.cli._abort import abort
from edge.cli._args import seconds
from edge.control.admin import NodeStatus
from edge.control.client import ControlError, OriginClient

__all__ = [
    "Applied",
    "Bar",
    "Failure",
    "Outcome",
    "add_wait_options",
    "ago",
    "failed_to_load",
    "problem",
    "tally",
    "wait",
]

# A node seen (registered, polled or reported) within this many seconds is waited for: it may be
# in its retry back-off or restarting right now, but it is part of the fleet.
SEEN_WITHIN_S = 600.0
_POLL_S = 0.25

# Whether a node has applied the change (from its last report).
Applied = Callable[[NodeStatus], bool]
# Why a node that applied the change failed it (e.g. the function did not load there), or None.
Failure = Callable[[NodeStatus], str | None]


class Outcome(NamedTuple):
    """What became of one node: "applied", "failed" or "timed out", and the line that says so."""

    node_id: str
    state: str
    line: str


def add_wait_options(parser: argparse.ArgumentParser) -> None:
    """--wait, --timeout and --seen-within."""
    parser.add_argument(
        "--wait",
        action="store_true",
        help="wait until every node seen lately has applied it (see --seen-within)",
    )
    parser.add_argument("--timeout", type=seconds, default=60.0, help="seconds --wait waits (default 60)")
    parser.add_argument(
        "--seen-within",
        type=seconds,
        default=SEEN_WITHIN_S,
        metavar="SECONDS",
        help="--wait waits for every node registered or seen within this many seconds, even one that"
        f" is not live right now (default {SEEN_WITHIN_S:g})",
    )


def failed_to_load(name: str, versions: Sequence[str]) -> Failure:
    """A node fails when it reports `name` in error or failing for one of `versions`."""

    def failure(node: NodeStatus) -> str | None:
        for status in node.report.functions if node.report else []:
            if (
                status.name == name
                and status.state in ("error", "failing")
                and (not status.versions or set(versions) & set(status.versions))
            ):
                shown = ", ".join(v[:12] for v in status.versions or versions)
                return f"{name} {shown}: {status.error}"
        return None

    return failure


def ago(seconds: float) -> str:
    """`42s ago`, `3m ago`, `5h ago`."""
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds}s ago"
    if seconds < 7200:
        return f"{seconds // 60}m ago"
    return f"{seconds // 3600}h ago"


def _outcome(
    node: NodeStatus, now: float, what: str, applied: Applied, failure: Failure, timeout: float
) -> Outcome:
    who = f"node {node.info.node_id} ({node.info.hostname})"
    if applied(node):
        problem = failure(node)
        if problem is not None:
            return Outcome(node.info.node_id, "failed", f"{who}: FAILED: {problem}")
        return Outcome(node.info.node_id, "applied", f"{who}: applied {what}")
    at = f"at revision {node.report.applied_revision}" if node.report else "no report yet"
    reason = f"; its last error: {node.report.errors[-1]}" if node.report and node.report.errors else ""
    seen = f"last seen {ago(now - node.last_seen)}"
    return Outcome(
        node.info.node_id, "timed out", f"{who}: timed out after {timeout:g} s ({at}, {seen}){reason}"
    )


def wait(
    client: OriginClient,
    args: argparse.Namespace,
    what: str,
    applied: Applied,
    failure: Failure = lambda node: None,
) -> list[Outcome]:
    """Poll `GET /v1/nodes` until every node seen within `args.seen_within` seconds applied `what`
    or failed it, or `args.timeout` passes; prints one line per node and returns the outcomes."""
    deadline = time.monotonic() + args.timeout
    bar = Bar(f"waiting for nodes to apply {what}")
    while True:
        try:
            listing = client.nodes()
        except ControlError as exc:
            bar.done()
            abort(str(exc))
        now = listing.now or time.time()
        nodes = [
            node
            for node in listing.nodes
            if now - max(node.last_seen, node.registered_at) <= args.seen_within
        ]
        # A node applies a revision even when one of its functions failed to load (it keeps the
        # old version and reports the error): applied and failed are both settled.
        settled = [node for node in nodes if applied(node)]
        bar.update(len(settled), len(nodes), f"{len(settled)}/{len(nodes)} nodes")
        if len(settled) == len(nodes) or time.monotonic() >= deadline:
            break
        time.sleep(_POLL_S)
    bar.done()
    outcomes = [_outcome(node, now, what, applied, failure, args.timeout) for node in nodes]
    out = sys.stderr if args.json else sys.stdout
    for outcome in outcomes:
        print(outcome.line, file=out)
    return outcomes


def problem(outcomes: Sequence[Outcome], what: str) -> str | None:
    """The error to abort with when a node failed or timed out, else None."""
    bad = [outcome for outcome in outcomes if outcome.state != "applied"]
    if bad:
        shown = ", ".join(f"{outcome.node_id} {outcome.state}" for outcome in bad)
        return f"{what}: {len(bad)} of {len(outcomes)} node(s) did not converge: {shown}"
    return None


def tally(outcomes: Sequence[Outcome], what: str, seen_within: float) -> str:
    """The closing line when every node applied the change."""
    if not outcomes:
        return f"no nodes seen within the last {seen_within:g} s to wait for"
    return f"{len(outcomes)} node(s) applied {what}"


class Bar:
    """A progress bar on stderr, only when stderr is a terminal."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.active = sys.stderr.isatty()
        self.shown = False

    def update(self, done: int, total: int, detail: str = "") -> None:
        if not self.active:
            return
        fraction = done / total if total else 1.0
        filled = int(fraction * 30)
        bar = "#" * filled + "." * (30 - filled)
        sys.stderr.write(f"\r{self.label} [{bar}] {fraction:4.0%} {detail}\x1b[K")
        sys.stderr.flush()
        self.shown = True

    def done(self) -> None:
        if self.shown:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()
