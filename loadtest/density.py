"""`make bench-density`: how many functions a node holds, and what one interpreter instance costs.

Breakdown (in this process, through the interpreter backend): KiB per interpreter of a blank
isolated interpreter, then the guest runtime booted in it (with the node's `warm_imports`), then
a hello function imported; and of a whole warm instance as the node runs it (`backend.take`,
answered one request: host thread, queues, audit hook and all), with and without its thread stacks.

Density (a real node, `edge node --functions DIR` with the default settings but `preload =
false`): N generated hello functions, each called once in random order (so the first calls are
cold starts), then wrk drives a random mix of them for a while. RSS, PSS, thread stacks and
threads of every process of the node, per warm instance against an idle node with one function,
and req/s. `--preload` starts every instance with the node instead (today two threads each, all
at once: thousands of functions take minutes on 2 cores).

    .venv/bin/python loadtest/density.py                   # 3,000 functions, 20 s mix
    .venv/bin/python loadtest/density.py --functions 300 --seconds 5
    .venv/bin/python loadtest/density.py --breakdown-only
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import http.client
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import msgspec

from edge.node.app import backend_options
from edge.node.settings import NodeSettings
from isolates.backends import IsolateSpec, backend_factory
from isolates.backends.subinterpreter import stdlib_paths
from isolates.guest import GUEST_DIR
from isolates.guest._edge_compat import call_exec, create_interpreter, destroy_interpreter
from loadtest._memory import Memory, process_memory, tree_memory
from loadtest._servers import Server, free_port
from loadtest.bench import ensure_wrk, run_wrk

HELLO = 'def handler(request):\n    return "hello world"\n'


def write_functions(root: Path, count: int) -> list[str]:
    """`count` hello functions `h0000`... under `root`; returns their names."""
    names = [f"h{index:04d}" for index in range(count)]
    for name in names:
        (root / name).mkdir()
        (root / name / "edge.toml").write_text("")
        (root / name / "main.py").write_text(HELLO)
    return names


# --- breakdown -------------------------------------------------------------------------------


class Stage(NamedTuple):
    """What one step of making an instance adds, in KiB per instance (and threads per instance)."""

    name: str
    rss: float
    no_stacks: float
    threads: float


def _run_in(interpreters: list[int], source: str) -> None:
    for iid in interpreters:
        error = call_exec(iid, source)
        if error:
            raise RuntimeError(f"in a measured interpreter: {error}")


def _per(before: Memory, after: Memory, count: int, name: str) -> Stage:
    return Stage(
        name,
        (after.rss - before.rss) / count,
        ((after.rss - after.stacks) - (before.rss - before.stacks)) / count,
        (after.threads - before.threads) / count,
    )


def breakdown(count: int, settings: NodeSettings) -> list[Stage]:
    """KiB per interpreter of each step, over `count` interpreters (see the module docstring)."""
    root = Path(tempfile.mkdtemp(prefix="edge-density-"))
    try:
        names = write_functions(root, count)
        preload = tuple(settings.warm_imports)
        stages = []
        gc.collect()
        start = process_memory(os.getpid())
        interpreters = [create_interpreter() for _ in range(count)]
        blank = process_memory(os.getpid())
        stages.append(_per(start, blank, count, "blank isolated interpreter"))
        guest = (str(GUEST_DIR), *stdlib_paths())
        boot = f"import sys\nsys.path[:] = {guest!r}\nimport _edge_runtime\n"
        _run_in(interpreters, f"{boot}_edge_runtime.warm_up({preload!r})\n")
        runtime = process_memory(os.getpid())
        stages.append(_per(blank, runtime, count, f"+ guest runtime, warm_imports = {list(preload)}"))
        for iid, name in zip(interpreters, names, strict=True):
            call_exec(iid, f"import sys\nsys.path.insert(0, {str(root / name)!r})\nimport main\n")
        loaded = process_memory(os.getpid())
        stages.append(_per(runtime, loaded, count, "+ a hello function's module"))
        for iid in interpreters:
            destroy_interpreter(iid)
        stages.append(asyncio.run(_instances(root, names, settings)))
        return stages
    finally:
        subprocess.run(["rm", "-rf", str(root)], check=False)


async def _instances(root: Path, names: list[str], settings: NodeSettings) -> Stage:
    """Whole warm instances as a node runs them: taken from the backend, one request answered each."""
    loop = asyncio.get_running_loop()
    options = msgspec.structs.replace(backend_options(settings), warm_pool=0)
    backend = backend_factory("interpreter")(loop, lambda *_: None, options)
    gc.collect()
    before = process_memory(os.getpid())
    isolates = []
    for name in names:
        spec = IsolateSpec(
            name=name,
            version="v1",
            directory=str(root / name),
            module="main",
            attribute="handler",
            timeout_ms=5000,
        )
        isolate = backend.take(spec, None)
        await isolate.ready
        isolates.append(isolate)
    for isolate in isolates:
        reply = await isolate.submit("GET", "/", "", [], b"", "r", time.monotonic() + 5)
        if reply[2] != 200:
            raise RuntimeError(f"a measured instance answered {reply}")
    after = process_memory(os.getpid())
    await asyncio.gather(*(isolate.close(5.0) for isolate in isolates))
    await backend.close(5.0)
    return _per(before, after, len(names), "whole warm instance (backend.take, one request)")


# --- density ---------------------------------------------------------------------------------


class Snapshot(NamedTuple):
    """Every process of a node at one moment: the sum, and the process holding the interpreters."""

    total: Memory
    server: Memory
    processes: int


def snapshot(pid: int) -> Snapshot:
    """The node's processes; the serving one is the one with the most threads (granian's worker)."""
    members = tree_memory(pid)
    total = sum(members.values(), Memory(0, 0, 0, 0, 0))
    server = max(members.values(), key=lambda memory: (memory.threads, memory.rss))
    return Snapshot(total, server, len(members))


def _node(root: Path, preload: bool) -> Server:
    port = free_port()
    argv = [sys.executable, "-m", "edge", "node", "--functions", str(root), "--port", str(port)]
    argv += ["--admin-port", "0"]
    env = {"EDGE_LOG_LEVEL": "warning", "EDGE_PRELOAD": "true" if preload else "false"}
    return Server(argv, f"http://127.0.0.1:{port}/_edge/ready", env=env)


def _port(server: Server) -> int:
    return int(server.ready_url.split(":")[2].split("/")[0])


def first_calls(port: int, names: list[str]) -> list[float]:
    """Each function once, in random order, over one keep-alive connection; ms per call."""
    order = random.sample(names, len(names))
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    times = []
    try:
        for name in order:
            started = time.perf_counter()
            connection.request("GET", f"/{name}")
            response = connection.getresponse()
            body = response.read()
            times.append((time.perf_counter() - started) * 1000)
            if response.status != 200 or body != b"hello world":
                raise RuntimeError(f"/{name} answered {response.status} {body[:200]!r}")
    finally:
        connection.close()
    return times


def mix(wrk: str, port: int, count: int, seconds: int, server: Server) -> tuple[float, int]:
    """wrk over random functions for `seconds`; (req/s, errors)."""
    script = Path(tempfile.mkstemp(suffix=".lua", prefix="edge-density-")[1])
    script.write_text(
        f"math.randomseed({random.randrange(1 << 30)})\n"
        "request = function()\n"
        f'  return wrk.format("GET", string.format("/h%04d", math.random(0, {count - 1})))\n'
        "end\n"
    )
    try:
        url = f"http://127.0.0.1:{port}/"
        result = run_wrk(wrk, url, 32, seconds, 1, server, script=str(script))
    finally:
        script.unlink()
    return result.rps, result.errors


def percentile(values: list[float], pct: float) -> float:
    """The `pct` percentile (nearest rank) of `values`."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(pct / 100 * len(ordered)) - 1))]


def _settle(pid: int, seconds: float = 1.0) -> Snapshot:
    time.sleep(seconds)  # the node finishes its post-request work (metrics sample, warm pool refill)
    return snapshot(pid)


def density(count: int, seconds: int, preload: bool) -> dict[str, Any]:
    """Start an idle node with one function, then one with `count`; returns the figures."""
    wrk = ensure_wrk()
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="edge-density-") as tmp:
        one = Path(tmp, "one")
        one.mkdir()
        write_functions(one, 1)
        with _node(one, preload) as node:
            first_calls(_port(node), ["h0000"])
            figures["idle"] = _settle(node.pid, 2.0)
        many = Path(tmp, "many")
        many.mkdir()
        names = write_functions(many, count)
        node = _node(many, preload)
        started = time.perf_counter()
        node.start(timeout=600)
        try:
            figures["ready_s"] = time.perf_counter() - started
            figures["ready"] = snapshot(node.pid)
            figures["first"] = first_calls(_port(node), names)
            figures["warm"] = _settle(node.pid)
            figures["mix"] = mix(wrk, _port(node), count, seconds, node)
            figures["after_mix"] = _settle(node.pid)
        finally:
            node.stop()
    return figures


def _mib(kib: float) -> str:
    return f"{kib / 1024:.1f} MiB"


def report_density(count: int, seconds: int, preload: bool, figures: dict[str, Any]) -> None:
    idle: Snapshot = figures["idle"]
    warm: Snapshot = figures["warm"]
    after: Snapshot = figures["after_mix"]
    mode = "preload = true (started with the node)" if preload else "preload = false (cold first calls)"
    print(f"density: {count} hello functions, {mode}")
    print(
        f"idle node (1 function, after its first request): {idle.processes} process(es), "
        f"RSS {_mib(idle.total.rss)} (PSS {_mib(idle.total.pss)}), threads {idle.total.threads}"
    )
    print(f"node ready after {figures['ready_s']:.1f} s")
    per = (warm.server.rss - idle.server.rss) / (count - 1)
    per_no_stacks = ((warm.server.rss - warm.server.stacks) - (idle.server.rss - idle.server.stacks)) / (
        count - 1
    )
    print(
        f"all {count} called once: node RSS {_mib(warm.total.rss)} (PSS {_mib(warm.total.pss)}), "
        f"serving process RSS {_mib(warm.server.rss)}, threads {warm.total.threads}"
    )
    print(
        f"RSS per warm instance: {per:.0f} KiB ({per / 1024:.2f} MiB); without thread stacks "
        f"{per_no_stacks:.0f} KiB ({per_no_stacks / 1024:.2f} MiB); thread stacks in all "
        f"{_mib(warm.total.stacks)}"
    )
    first = figures["first"]
    print(
        f"first calls ({'preloaded' if preload else 'cold starts'}): p50 {percentile(first, 50):.1f} ms, "
        f"p99 {percentile(first, 99):.1f} ms, max {max(first):.1f} ms"
    )
    rps, errors = figures["mix"]
    print(f"random mix, wrk -t1 -c32 -d{seconds}s: {rps:.0f} req/s, {errors} errors")
    print(
        f"after the mix: node RSS {_mib(after.total.rss)} (PSS {_mib(after.total.pss)}), "
        f"threads {after.total.threads}"
    )


def report_breakdown(stages: list[Stage], count: int) -> None:
    print(f"breakdown: KiB per interpreter over {count} interpreters (this process's RSS)")
    print(f"| {'step':<58} | {'RSS':>6} | {'w/o stacks':>10} | {'threads':>7} |")
    print(f"| {'-' * 58} | {'-' * 6} | {'-' * 10} | {'-' * 7} |")
    for stage in stages:
        print(f"| {stage.name:<58} | {stage.rss:>6.0f} | {stage.no_stacks:>10.0f} | {stage.threads:>7.1f} |")
    pieces = sum(stage.rss for stage in stages[:3])
    print(f"blank + runtime + function: {pieces:.0f} KiB; the whole instance: {stages[3].rss:.0f} KiB")


def main() -> int:
    """Run the breakdown and the density run, print their figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--functions", type=int, default=3000, help="hello functions on the node")
    parser.add_argument("--seconds", type=int, default=20, help="length of the random mix")
    parser.add_argument("--preload", action="store_true", help="start every instance with the node")
    parser.add_argument("--sample", type=int, default=50, help="interpreters measured in the breakdown")
    parser.add_argument("--breakdown-only", action="store_true")
    parser.add_argument("--density-only", action="store_true")
    args = parser.parse_args()
    if args.functions < 2:
        parser.error(f"--functions {args.functions}: expected at least 2 (one is the idle node)")
    if not args.density_only:
        report_breakdown(breakdown(args.sample, NodeSettings()), args.sample)
    if not args.breakdown_only:
        figures = density(args.functions, args.seconds, args.preload)
        print()
        report_density(args.functions, args.seconds, args.preload, figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
