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


def alternate(
    variants: dict[str, dict[str, str]], source: Path, rounds: int, seconds: int
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """req/s and CPU us per request of `source` served by `edge node` under each variant's
    environment, the variants alternated per round; raises RuntimeError without wrk."""
    wrk = shutil.which("wrk")
    if wrk is None:
        raise RuntimeError("wrk is not installed (apt-get install wrk)")
    rates: dict[str, list[float]] = {name: [] for name in variants}
    cpus: dict[str, list[float]] = {name: [] for name in variants}
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copytree(source, Path(tmp) / source.name)
        for _ in range(rounds):
            for name, extra in variants.items():
                port = free_port()
                argv = [sys.executable, "-m", "edge", "node", "--functions", tmp, "--port", str(port)]
                argv += ["--admin-port", "0"]
                env = {"EDGE_LOG_LEVEL": "warning", "EDGE_ACCESS_LOG": "false", **extra}
                with Server(argv, f"http://127.0.0.1:{port}/_edge/ready", env=env) as server:
                    url = f"http://127.0.0.1:{port}/{source.name}"
                    run_wrk(wrk, url, 32, 1, 1)
                    result = run_wrk(wrk, url, 32, seconds, 1, server)
                    rates[name].append(result.rps)
                    cpus[name].append(result.cpu_us)
    return rates, cpus


def report(labels: dict[str, str], rates: dict[str, list[float]], cpus: dict[str, list[float]]) -> None:
    """Each variant's rounds and medians, then the second's ratios to the first."""
    for name, label in labels.items():
        rounds = ", ".join(f"{rate:.0f}" for rate in rates[name])
        print(
            f"{label}: {rounds}; median {statistics.median(rates[name]):.0f} req/s,"
            f" {statistics.median(cpus[name]):.1f} us CPU per request"
        )
    first, second = list(labels)
    ratio = statistics.median(rates[second]) / statistics.median(rates[first])
    cpu_ratio = statistics.median(cpus[second]) / statistics.median(cpus[first])
    print(f"{second} / {first}: {ratio:.2f}x req/s, {cpu_ratio:.2f}x CPU per request")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", help="source tree A (e.g. the main checkout)")
    parser.add_argument("b", help="source tree B")
    parser.add_argument("--function", default="examples/hello", help="function directory to serve")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seconds", type=int, default=3)
    args = parser.parse_args()
    trees = {"A": str(Path(args.a).resolve()), "B": str(Path(args.b).resolve())}
    try:
        rates, cpus = alternate(
            {name: {"PYTHONPATH": tree} for name, tree in trees.items()},
            (ROOT / args.function).resolve(),
            args.rounds,
            args.seconds,
        )
    except RuntimeError as exc:
        print(exc, file=sys.stderr)
        return 2
    report({name: f"{name} {tree}" for name, tree in trees.items()}, rates, cpus)
    return 0


if __name__ == "__main__":
    sys.exit(main())
