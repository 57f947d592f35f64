"""Granian's main process as the node's supervisor, with the node's own crash-loop rule.

Granian (2.8) respawns a dead worker when asked to, but exits the whole server when a worker
dies within 5.5 s of its last respawn ("Worker crash loop detected") — and a graceful recycle
(SIGHUP, the RSS ceiling) counts as a respawn too. For a node, one function that crashes its
worker twice in a row (a segfault in a granted extension) must not take every other function
down; so the node allows `MAX_CRASHES` respawns within `CRASH_WINDOW_S` and only then lets
granian's own rule end the server (a worker that cannot even start is still a crash loop).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from typing import Any

from granian.server.mp import MPServer

__all__ = ["CRASH_WINDOW_S", "MAX_CRASHES", "NodeServer"]

log = logging.getLogger("edge.node")

CRASH_WINDOW_S = 60.0
MAX_CRASHES = 10


class NodeServer(MPServer):
    """`granian.Granian` whose crash-loop rule allows MAX_CRASHES respawns per CRASH_WINDOW_S."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._edge_respawns: deque[float] = deque()

    def _respawn_workers(self, workers: Any, spawn_target: Any, target_loader: Any, delay: float = 0) -> None:
        super()._respawn_workers(workers, spawn_target, target_loader, delay=delay)
        now = time.monotonic()
        respawns = self._edge_respawns
        respawns.append(now)
        while respawns and now - respawns[0] > CRASH_WINDOW_S:
            respawns.popleft()
        if len(respawns) < MAX_CRASHES:
            # Forget the respawn times granian's 5.5 s rule looks at.
            self.respawned_wrks.clear()
        else:
            log.error(
                "%d worker respawns within %.0f s: the next crash ends the node",
                len(respawns),
                CRASH_WINDOW_S,
            )
