"""A/B of the node's allocator: `PYTHONMALLOC=pymalloc` (the default) against `malloc`.

    .venv/bin/python loadtest/allocator_ab.py [--rounds 4] [--seconds 3]

One `edge node --functions` serving examples/hello per round and allocator, alternated so that
drift on a shared machine hits both; wrk -t1 -c32 after a 1 s warm-up; prints req/s per round,
the medians and their ratio.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from loadtest._servers import ROOT
from loadtest.tree_ab import alternate, report

ALLOCATORS = ("pymalloc", "malloc")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seconds", type=int, default=3)
    args = parser.parse_args()
    variants = {name: {"PYTHONMALLOC": name} for name in ALLOCATORS}
    try:
        rates, cpus = alternate(variants, ROOT / "examples" / "hello", args.rounds, args.seconds)
    except RuntimeError as exc:
        print(exc, file=sys.stderr)
        return 2
    report({name: name for name in ALLOCATORS}, rates, cpus)
    return 0


if __name__ == "__main__":
    sys.exit(main())
