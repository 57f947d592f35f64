"""Cost of one request round trip through the interpreter backend, by the number of interpreters.

In-process, no HTTP: an `IsolatePool` with N hello functions deployed (one warm interpreter
each), then random calls to them with `concurrency` in flight for `seconds`. Prints req/s and the
process's CPU time per request (every thread: the event loop's and the runner threads'), which is
what grows with N when a per-request operation walks a list of every queue or interpreter.

    PYTHONPATH=$PWD .venv/bin/python loadtest/roundtrip.py --functions 10 300 3000
"""

from __future__ import annotations

import argparse
import asyncio
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

from edge.node.functions import content_version, isolate_spec
from isolates.backends import RESPONSE
from isolates.manifest import load_manifest
from isolates.pool import IsolatePool

HELLO = 'def handler(request):\n    return "hello world"\n'


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def measure(
    root: Path, count: int, seconds: float, concurrency: int
) -> tuple[float, float, float, float]:
    """(requests per second, CPU microseconds per request, batches and wake-ups per request) over
    `count` deployed hello functions."""
    names = []
    for index in range(count):
        name = f"h{index:04d}"
        (root / name).mkdir(exist_ok=True)
        (root / name / "edge.toml").write_text("")
        (root / name / "main.py").write_text(HELLO)
        names.append(name)
    pool = IsolatePool(lambda *line: None, warm_pool=0)
    try:
        for start in range(0, count, 50):  # 50 at a time: each creates an interpreter and loads
            specs = []
            for name in names[start : start + 50]:
                directory = root / name
                specs.append(isolate_spec(directory, load_manifest(directory), content_version(directory)))
            await asyncio.gather(*(pool.deploy(spec.name, [(spec, 100)]) for spec in specs))
        functions = [pool.get(name) for name in names]
        done = 0
        stop_at = 0.0

        async def client(rng: random.Random) -> None:
            nonlocal done
            while time.monotonic() < stop_at:
                function = rng.choice(functions)
                assert function is not None
                isolate = function.pick()
                assert isolate is not None
                reply = await isolate.submit("GET", "/", "", (), b"", "r", time.monotonic() + 10.0)
                if reply[0] != RESPONSE or reply[2] != 200:
                    raise RuntimeError(f"unexpected reply {reply!r}")
                done += 1

        # A short warm-up: every interpreter activated once, runner threads started.
        stop_at = time.monotonic() + min(1.0, seconds / 3)
        await asyncio.gather(*(client(random.Random(seed)) for seed in range(concurrency)))
        isolates = [function.pick() for function in functions if function is not None]
        done = 0
        batches = sum(getattr(isolate, "batches", 0) for isolate in isolates)
        wakes = sum(getattr(isolate, "wakes", 0) for isolate in isolates)
        started, cpu = time.monotonic(), _cpu()
        stop_at = started + seconds
        await asyncio.gather(*(client(random.Random(1000 + seed)) for seed in range(concurrency)))
        elapsed, used = time.monotonic() - started, _cpu() - cpu
        batches = sum(getattr(isolate, "batches", 0) for isolate in isolates) - batches
        wakes = sum(getattr(isolate, "wakes", 0) for isolate in isolates) - wakes
        return done / elapsed, used / done * 1e6, batches / done, wakes / done
    finally:
        await pool.close(5.0)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--functions", type=int, nargs="+", default=[10, 300, 3000])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}, concurrency {args.concurrency}, {args.seconds:.0f} s each")
    for count in args.functions:
        with tempfile.TemporaryDirectory() as directory:
            rate, cpu, batches, wakes = asyncio.run(
                measure(Path(directory), count, args.seconds, args.concurrency)
            )
        print(
            f"{count:5d} interpreters: {rate:8.0f} req/s  {cpu:6.1f} us CPU per request"
            f"  {batches:.2f} batches and {wakes:.2f} wake-ups per request",
            flush=True,
        )


if __name__ == "__main__":
    main()
