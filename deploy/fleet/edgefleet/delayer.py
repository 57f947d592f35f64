"""User-space delay for kernels without netem: NFQUEUE verdicts given after a per-packet delay.

Reads one JSON command a line on stdin ({"netns", "queue", "delay_ms", "jitter_ms"}) and answers
"ok" (or the error) on stdout. For each namespace it binds the NFQUEUE `queue` inside it (a netlink
socket belongs to the namespace it was made in) and holds every queued packet for delay +- jitter
(uniform), then accepts it. Packets of one node leave in the order they came (a packet never
overtakes an earlier one), like a link whose queue varies, so jitter does not also reorder TCP.
"""

from __future__ import annotations

import heapq
import json
import os
import random
import selectors
import sys
import time
from typing import Any

from netfilterqueue import NetfilterQueue

from edgefleet.namespaces import inside

__all__ = ["main"]


class _Queue:
    def __init__(self, namespace: str, number: int, due: list[tuple[float, int, Any]]) -> None:
        self.delay = 0.0
        self.jitter = 0.0
        self.last = 0.0
        self._due = due
        with inside(namespace):
            self.nfq = NetfilterQueue()
            self.nfq.bind(number, self._hold, max_len=4096)

    def _hold(self, packet: Any) -> None:
        now = time.monotonic()
        when = max(now + self.delay + random.uniform(-self.jitter, self.jitter), self.last, now)
        self.last = when
        heapq.heappush(self._due, (when, id(packet), packet))


def main() -> int:
    due: list[tuple[float, int, Any]] = []
    queues: dict[str, _Queue] = {}
    selector = selectors.DefaultSelector()
    os.set_blocking(sys.stdin.fileno(), True)
    selector.register(sys.stdin, selectors.EVENT_READ, None)
    while True:
        timeout = max(0.0, due[0][0] - time.monotonic()) if due else None
        for key, _ in selector.select(timeout):
            if key.data is None:
                line = sys.stdin.readline()
                if not line:
                    return 0
                try:
                    command = json.loads(line)
                    queue = queues.get(command["netns"])
                    if queue is None:
                        queue = queues[command["netns"]] = _Queue(command["netns"], command["queue"], due)
                        selector.register(queue.nfq.get_fd(), selectors.EVENT_READ, queue)
                    queue.delay = float(command["delay_ms"]) / 1000
                    queue.jitter = float(command["jitter_ms"]) / 1000
                except (OSError, KeyError, ValueError) as exc:
                    print(f"{type(exc).__name__}: {exc}", flush=True)
                else:
                    print("ok", flush=True)
            else:
                key.data.nfq.run(block=False)
        now = time.monotonic()
        while due and due[0][0] <= now:
            heapq.heappop(due)[2].accept()


if __name__ == "__main__":
    sys.exit(main())
