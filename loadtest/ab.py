"""A/B: hello through an interpreter isolate, another checkout of this project against this one.

    git worktree add /tmp/base <commit> && .venv/bin/python loadtest/ab.py /tmp/base --rounds 12

Both nodes (`edge node --functions examples`, one worker each) run at once; each round drives
them in turn (order alternating) with `wrk -t1 -c64 -d3s` (`--connections`); the ratio of a
round compares the two within that round, because this VM's speed drifts. Reports req/s and CPU per request.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from loadtest._servers import ROOT, Server, free_port
from loadtest.bench import WrkResult, ensure_wrk, run_wrk


def _node(tree: Path, port: int) -> Server:
    argv = [sys.executable, "-m", "edge", "node", "--functions", str(tree / "examples"), "--port", str(port)]
    env = {"PYTHONPATH": str(tree), "EDGE_LOG_LEVEL": "warning"}
    return Server(argv, f"http://127.0.0.1:{port}/_edge/ready", env=env, cwd=tree)


def main() -> int:
    """Run the rounds and print the medians and ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base", type=Path, help="the other checkout (e.g. a git worktree)")
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--seconds", type=int, default=3)
    parser.add_argument(
        "--connections", type=int, default=64, help="wrk connections (1: each request finds an idle instance)"
    )
    args = parser.parse_args()
    wrk = ensure_wrk()
    results: dict[str, list[WrkResult]] = {"base": [], "this": []}
    with contextlib.ExitStack() as stack:
        targets = {}
        for name, tree in (("base", args.base.resolve()), ("this", ROOT)):
            port = free_port()
            targets[name] = (f"http://127.0.0.1:{port}/hello", stack.enter_context(_node(tree, port)))
        for url, server in targets.values():
            run_wrk(wrk, url, args.connections, 1, 1, server)  # warm-up
        for index in range(args.rounds):
            order = ("base", "this") if index % 2 == 0 else ("this", "base")
            for name in order:
                url, server = targets[name]
                results[name].append(run_wrk(wrk, url, args.connections, args.seconds, 1, server))
    base, this = results["base"], results["this"]
    ratios = [b.rps / a.rps for a, b in zip(base, this, strict=True)]
    for name, runs in results.items():
        rps = statistics.median(run.rps for run in runs)
        cpu = statistics.median(run.cpu_us for run in runs)
        print(f"{name}: median {rps:.0f} req/s, {cpu:.1f} cpu us/req")
    cpu_ratio = statistics.median(r.cpu_us for r in this) / statistics.median(r.cpu_us for r in base)
    print(
        f"this/base req/s: median {statistics.median(ratios):.3f}, range {min(ratios):.3f}-{max(ratios):.3f}"
    )
    print(f"this/base cpu us/req: {cpu_ratio:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
