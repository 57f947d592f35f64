"""A worker's health: wedged isolates, failing functions, and asking for a graceful recycle.

An isolate stuck in C code cannot be interrupted; the pool abandons it and starts a fresh one,
but the stuck thread keeps its memory and, if it spins, a whole core. Only ending the worker
process gives them back, so once a worker holds `max_abandoned_isolates` of them, or one of them
keeps burning CPU, the worker asks granian's main process for a graceful recycle (SIGHUP: a new
worker starts and loads its functions first, then the old one drains and exits).

Marks of failing function versions outlive the worker: they are kept in the node's runtime
directory (made by `edge node` for the life of the node), so a recycled worker does not start a
version that kept wedging in a loop.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
from collections.abc import Callable
from pathlib import Path

from isolates.pool import IsolatePool

__all__ = ["RUNTIME_DIR_VARIABLE", "FailingMarks", "WorkerWatch", "recycle_by_sighup"]

log = logging.getLogger("edge.node")

# Set by `edge node` for its workers: a private directory that lives as long as the node process.
RUNTIME_DIR_VARIABLE = "EDGE_NODE_RUNTIME_DIR"
# An abandoned isolate that used this much CPU since it was abandoned is spinning, not sleeping.
SPINNING_CPU_S = 1.0
# How often a worker looks at its wedged isolates.
CHECK_EVERY_S = 0.5


def recycle_by_sighup() -> None:
    """Ask granian's main process (this worker's parent) to replace its workers gracefully."""
    os.kill(os.getppid(), signal.SIGHUP)


class FailingMarks:
    """(function, version) -> reason, kept in `directory/failing.json` when there is a directory."""

    def __init__(self, directory: str | None) -> None:
        self._path = Path(directory, "failing.json") if directory else None

    def load(self) -> dict[tuple[str, str], str]:
        """The marks recorded by this node's earlier workers (none when there is no file)."""
        if self._path is None:
            return {}
        try:
            entries = json.loads(self._path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.error("%s: cannot read failing function marks: %s", self._path, exc)
            return {}
        return {(entry["function"], entry["version"]): entry["reason"] for entry in entries}

    def add(self, function: str, version: str, reason: str) -> None:
        """Record one more mark (atomically: other workers may read the file meanwhile)."""
        if self._path is None:
            return
        marks = self.load()
        marks[(function, version)] = reason
        entries = [{"function": f, "version": v, "reason": r} for (f, v), r in sorted(marks.items())]
        temporary = self._path.with_name(f".failing.{os.getpid()}")
        temporary.write_text(json.dumps(entries))
        temporary.replace(self._path)


class WorkerWatch:
    """Looks at the pool's wedged isolates and asks for one recycle when there are too many."""

    def __init__(self, pool: IsolatePool, max_abandoned: int, recycle: Callable[[], None]) -> None:
        self._pool = pool
        self._max_abandoned = max_abandoned
        self._recycle = recycle
        # Why this worker asked to be recycled ("" until it did; it asks once).
        self.recycle_reason = ""

    def check(self) -> str:
        """Ask for a recycle when needed; returns why it did (now or earlier), else ""."""
        if self.recycle_reason:
            return self.recycle_reason
        wedged = self._pool.wedged_alive()
        reason = ""
        if len(wedged) >= self._max_abandoned:
            reason = (
                f"{len(wedged)} isolates stuck in C code (max_abandoned_isolates = {self._max_abandoned})"
            )
        else:
            for stuck in wedged:
                spent = stuck.cpu_since_abandoned()
                if spent >= SPINNING_CPU_S:
                    reason = (
                        f"an abandoned isolate of function {stuck.isolate.spec.name} keeps spinning "
                        f"({spent:.1f} CPU seconds since it was abandoned)"
                    )
                    break
        if reason:
            self.recycle_reason = reason
            log.error("recycling this worker (a new one starts first): %s", reason)
            self._recycle()
        return reason

    async def run(self) -> None:
        """Check every CHECK_EVERY_S until cancelled (at shutdown)."""
        while True:
            await asyncio.sleep(CHECK_EVERY_S)
            self.check()
