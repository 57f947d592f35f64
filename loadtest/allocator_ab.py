"""A/B of the node's allocator: `PYTHONMALLOC=pymalloc` against `malloc` (the node's default).

    .venv/bin/python loadtest/allocator_ab.py [--rounds 4] [--seconds 3]

One `edge node --functions` serving examples/hello per round and allocator, alternated so that
drift on a shared machine hits both; wrk -t1 -c32 after a 1 s warm-up; prints req/s per round,
the medians and their ratio.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from loadtest._servers import ROOT, Server, free_port
from loadtest.bench import run_wrk

ALLOCATORS = ("pymalloc", "malloc")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seconds", type=int, default=3)
    args = parser.parse_args()
    wrk = shutil.which("wrk")
    if wrk is None:
        print("wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 2
    results: dict[str, list[float]] = {name: [] for name in ALLOCATORS}
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copytree(ROOT / "examples" / "hello", Path(tmp) / "hello")
        for _ in range(args.rounds):
            for allocator in ALLOCATORS:
                port = free_port()
                argv = [sys.executable, "-m", "edge", "node", "--functions", tmp, "--port", str(port)]
                env = {"EDGE_LOG_LEVEL": "warning", "EDGE_ACCESS_LOG": "false", "PYTHONMALLOC": allocator}
                argv += ["--admin-port", "0"]
                with Server(argv, f"http://127.0.0.1:{port}/_edge/ready", env=env) as server:
                    url = f"http://127.0.0.1:{port}/hello"
                    run_wrk(wrk, url, 32, 1, 1)
                    results[allocator].append(run_wrk(wrk, url, 32, args.seconds, 1, server).rps)
    for allocator, rates in results.items():
        rounds = ", ".join(f"{rate:.0f}" for rate in rates)
        print(f"{allocator}: {rounds}; median {statistics.median(rates):.0f} req/s")
    ratio = statistics.median(results["malloc"]) / statistics.median(results["pymalloc"])
    print(f"malloc / pymalloc: {ratio:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
