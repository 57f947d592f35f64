"""A/B of two source trees of the project: one function's req/s and CPU per request on each.

    .venv/bin/python loadtest/tree_ab.py /work/main . [--function examples/hello] [--rounds 4]

One `edge node --functions` per round and tree (PYTHONPATH set to the tree, so the node and its
isolates run that tree's code), alternated so that drift on a shared machine hits both; wrk -t1
-c32 after a 1 s warm-up; prints req/s and CPU us per request per round, the medians and ratios.
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", help="source tree A (e.g. the main checkout)")
    parser.add_argument("b", help="source tree B")
    parser.add_argument("--function", default="examples/hello", help="function directory to serve")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seconds", type=int, default=3)
    args = parser.parse_args()
    wrk = shutil.which("wrk")
    if wrk is None:
        print("wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 2
    trees = {"A": str(Path(args.a).resolve()), "B": str(Path(args.b).resolve())}
    source = (ROOT / args.function).resolve()
    rates: dict[str, list[float]] = {name: [] for name in trees}
    cpus: dict[str, list[float]] = {name: [] for name in trees}
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copytree(source, Path(tmp) / source.name)
        for _ in range(args.rounds):
            for name, tree in trees.items():
                port = free_port()
                argv = [sys.executable, "-m", "edge", "node", "--functions", tmp, "--port", str(port)]
                argv += ["--admin-port", "0"]
                env = {"EDGE_LOG_LEVEL": "warning", "EDGE_ACCESS_LOG": "false", "PYTHONPATH": tree}
                with Server(argv, f"http://127.0.0.1:{port}/_edge/ready", env=env) as server:
                    url = f"http://127.0.0.1:{port}/{source.name}"
                    run_wrk(wrk, url, 32, 1, 1)
                    result = run_wrk(wrk, url, 32, args.seconds, 1, server)
                    rates[name].append(result.rps)
                    cpus[name].append(result.cpu_us)
    for name, tree in trees.items():
        rounds = ", ".join(f"{rate:.0f}" for rate in rates[name])
        print(
            f"{name} {tree}: {rounds}; median {statistics.median(rates[name]):.0f} req/s,"
            f" {statistics.median(cpus[name]):.1f} us CPU per request"
        )
    ratio = statistics.median(rates["B"]) / statistics.median(rates["A"])
    cpu_ratio = statistics.median(cpus["B"]) / statistics.median(cpus["A"])
    print(f"B / A: {ratio:.2f}x req/s, {cpu_ratio:.2f}x CPU per request")
    return 0


if __name__ == "__main__":
    sys.exit(main())
