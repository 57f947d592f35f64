"""What an `_interpqueues` round (put, count, get) and an `_interpreters.exec` cost with N interpreters.

    .venv/bin/python -S loadtest/queue_cost.py 10 300 3000

CPython 3.13 finds a queue by walking a list of every queue, and releasing an item's
cross-interpreter data finds its interpreter by walking every interpreter under the runtime's
lock: this is why interpreter isolates carry their messages on pipes (docs/perf/2026-12-02-pipes.md).
Each count runs in a fresh process (interpreters are not destroyed in between). 3.13 API only.
"""

from __future__ import annotations

import _interpqueues
import _interpreters
import subprocess
import sys
import time

ROUNDS = 20000


def measure(count: int) -> None:
    interpreters = [_interpreters.create("isolated") for _ in range(count)]
    # 3.13: create(maxsize, fmt, unboundop); two queues per interpreter, as the isolates had.
    queues = [_interpqueues.create(0, 0, 1) for _ in range(2 * count)]
    for name, queue in (("oldest queue", queues[0]), ("newest queue", queues[-1])):
        started = time.perf_counter()
        for _ in range(ROUNDS):
            _interpqueues.put(queue, (b"x", 1), 0, 1)
            _interpqueues.get_count(queue)
            _interpqueues.get(queue)
        per = (time.perf_counter() - started) / ROUNDS * 1e6
        print(f"{count:5d} interpreters, {name}: {per:7.2f} us per put + count + get")
    for name, interpreter in (("oldest", interpreters[0]), ("newest", interpreters[-1])):
        started = time.perf_counter()
        for _ in range(2000):
            _interpreters.exec(interpreter, "pass")
        per = (time.perf_counter() - started) / 2000 * 1e6
        print(f"{count:5d} interpreters, exec in the {name}: {per:7.1f} us")


def main() -> int:
    counts = [int(arg) for arg in sys.argv[1:]] or [10, 300, 3000]
    if len(counts) > 1:
        for count in counts:
            subprocess.run([sys.executable, "-S", __file__, str(count)], check=True)
    else:
        measure(counts[0])
    return 0


if __name__ == "__main__":
    sys.exit(main())
