"""Scale inside one node: cold starts under churn, threads with many functions, two busy functions.

    .venv/bin/python loadtest/churn.py --functions 300

- cold start under churn: `--functions` never-run hello functions (`preload = false`) called back
  to back, one request each, no pause: the first-response times (p50, p99, max), then the OS
  threads of the node's worker with all of them deployed and run once;
- two CPU-bound functions on 2 cores: requests to both at once against requests to one, as a
  throughput ratio (2.0: perfectly parallel; 1.0: serialised).
`make bench` runs both (see bench.py); another checkout can be measured with `--tree`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from loadtest._servers import ROOT, Server, free_port
from loadtest.propagation import percentile

CPU = """\
def handler(request):
    total = 0
    for i in range(int(request.query_string or "200000")):
        total += i * i
    return str(total)
"""


def node(port: int, functions: Path, tree: Path, **env: str) -> Server:
    """An edge node of checkout `tree` serving `functions` (1 worker, the defaults)."""
    argv = [sys.executable, "-m", "edge", "node", "--functions", str(functions), "--port", str(port)]
    env = {"PYTHONPATH": str(tree), "EDGE_LOG_LEVEL": "warning", **env}
    return Server(argv, f"http://127.0.0.1:{port}/_edge/ready", env=env, cwd=tree)


def worker_threads(pid: int) -> int:
    """OS threads of the node's granian worker(s), not granian's main process; those of the node's
    own process when it serves in one (workers = 1, the default)."""
    from loadtest.bench import _worker_pids

    workers = _worker_pids(pid) or [pid]
    return sum(len(list(Path(f"/proc/{worker}/task").iterdir())) for worker in workers)


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as response:
        body: bytes = response.read()
        return body


def settle(port: int, limit: float = 30.0) -> None:
    """Wait until the node made the blank interpreters its warm pool wants (deployed functions
    are called some time after they are deployed, not while the node starts)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        warm = json.loads(_get(f"http://127.0.0.1:{port}/_edge/metrics")).get("warm_pool")
        if warm is None or warm["made"] >= warm["blanks"] >= warm["target"]:
            return
        time.sleep(0.1)


def churn(count: int, tree: Path = ROOT, **env: str) -> tuple[list[float], int, int]:
    """First-response times (ms) of `count` never-run functions called back to back, once the node
    settled, and the worker's threads before the first call and after the last. `env`: node
    settings (EDGE_WARM_POOL_MAX=...)."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for index in range(count):
            shutil.copytree(tree / "examples" / "hello", root / f"cold{index:03d}")
        port = free_port()
        times = []
        with node(port, root, tree, EDGE_PRELOAD="false", **env) as server:
            settle(port)
            before = worker_threads(server.pid)
            for index in range(count):
                started = time.perf_counter()
                _get(f"http://127.0.0.1:{port}/cold{index:03d}")
                times.append((time.perf_counter() - started) * 1000)
            time.sleep(1.0)  # idle functions settle (an interpreter isolate parks within 0.25 s)
            after = worker_threads(server.pid)
        return times, before, after


def parallel(requests: int, tree: Path = ROOT) -> float:
    """Throughput of two CPU-bound functions called at once over that of one (best of 3 rounds)."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for name in ("cpu1", "cpu2"):
            (root / name).mkdir()
            (root / name / "edge.toml").write_text("timeout_ms = 30000\n")
            (root / name / "main.py").write_text(CPU)
        port = free_port()
        with node(port, root, tree):

            def drive(name: str) -> None:
                for _ in range(requests):
                    _get(f"http://127.0.0.1:{port}/{name}?400000")

            drive("cpu1")
            drive("cpu2")  # warm
            ratios = []
            for _ in range(3):
                started = time.perf_counter()
                drive("cpu1")
                one = time.perf_counter() - started
                pair = [threading.Thread(target=drive, args=(name,)) for name in ("cpu1", "cpu2")]
                started = time.perf_counter()
                for thread in pair:
                    thread.start()
                for thread in pair:
                    thread.join()
                two = time.perf_counter() - started
                ratios.append(2 * one / two)
            return max(ratios)


def report(count: int, requests: int, tree: Path = ROOT) -> None:
    """Print the churn and parallel figures."""
    if count:
        print(f"\ncold start under churn: {count} never-run functions back to back (preload = false):")
        rows = (("node defaults", {}), (f"warm_pool_max = {count}", {"EDGE_WARM_POOL_MAX": str(count)}))
        for label, env in rows:
            times, before, after = churn(count, tree, **env)
            ordered = sorted(times)
            print(
                f"{label}: p50 {statistics.median(ordered):.1f} ms, p99 {percentile(ordered, 99):.1f} ms,"
                f" max {ordered[-1]:.1f} ms; worker threads {before} before the first call, {after} after"
            )
    if requests:
        print(f"\ntwo CPU-bound functions at once vs one ({requests} requests each, best of 3):")
        print(f"{parallel(requests, tree):.2f}x the throughput of one")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--functions", type=int, default=300, help="never-run functions (0: skip)")
    parser.add_argument("--requests", type=int, default=20, help="CPU-bound requests per round (0: skip)")
    parser.add_argument("--tree", type=Path, default=ROOT, help="the checkout to measure")
    args = parser.parse_args()
    report(args.functions, args.requests, args.tree.resolve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
