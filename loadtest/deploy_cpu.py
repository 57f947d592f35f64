"""The CPU one node spends applying a deploy, and deploy → live: one origin, one node, N deploys.

The node runs in its own process group (granian's main process and its worker); its CPU is the
group's utime + stime from /proc, read just before each deploy call and again just before the
next one, so each deploy is charged everything it set off (fetch, verify, unpack, warm, switch,
report, retiring the old isolate, refilling the warm pool). What the node spends anyway while it
only long-polls (measured first, for `IDLE_S`) is taken off. Live: the node writes `applied.json`
right after it switched (edge/node/sync.py), so its mtime is the switch time, read without asking
the node anything (polling it over HTTP every few ms would be charged to the deploy); one GET per
deploy then checks the node serves the new body. The CPU is also read once the switch is seen:
the part of a deploy's CPU that other nodes on the same cores wait for (the report, retiring the
old isolate and refilling the warm pool come after it). /proc counts CPU in ticks (10 ms), so
one deploy's figure is coarse; the means over the run are not.

    .venv/bin/python loadtest/deploy_cpu.py --deploys 20
"""

from __future__ import annotations

import argparse
import http.client
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edge import bundle
from edge.control.client import OriginClient
from loadtest._servers import ROOT, free_port, wait_http
from loadtest.propagation import edge_command, environ, node_token_file, percentile

__all__ = ["Deploy", "group_cpu_seconds", "main", "measure"]

FUNCTION = "hello"
# Deploys made and waited for before the measured ones: the first imports what a deploy needs.
WARMUP = 2
# How long the node's idle cost (long-polling) is measured for.
IDLE_S = 5.0
# After a deploy is live, the node still retires the old isolate and refills its warm pool:
# wait this long before the next deploy, so that work is charged to the deploy that caused it.
SETTLE_S = 0.7
# How long one deploy may take to go live before the run is declared broken.
DEADLINE_S = 10.0
_TICK = os.sysconf("SC_CLK_TCK")


class Deploy(NamedTuple):
    """One measured deploy."""

    cpu_ms: float  # the node's CPU for it, net of idle long-polling
    raw_cpu_ms: float  # the same, idle long-polling included
    live_s: float  # from the deploy call returning to the node's switch
    # The node's CPU from the deploy call to the switch was seen: what other nodes on the same
    # cores wait for; the rest (report, retiring the old isolate, the warm pool) comes after.
    to_live_cpu_ms: float


def group_cpu_seconds(group: int) -> float:
    """User + system CPU seconds of the live processes in process group `group` (threads included)."""
    total = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as stat:
                fields = stat.read().rpartition(b")")[2].split()
        except OSError:
            continue
        # Fields after the name: state(0) ppid(1) pgrp(2) ... utime(11) stime(12).
        if int(fields[2]) == group:
            total += int(fields[11]) + int(fields[12])
    return total / _TICK


@contextmanager
def _server(argv: list[str], ready_url: str, log: Path, env: dict[str, str]) -> Iterator[int]:
    """A server in its own process group (its pid is the group), stopped on exit."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        try:
            wait_http(ready_url, 60, process)
        except (RuntimeError, TimeoutError) as exc:
            raise RuntimeError(f"edge {argv[3]}: {exc}\n{log.read_text(errors='replace')[-2000:]}") from None
        yield process.pid
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)


def _perf(pid: int, out: Path) -> subprocess.Popen[bytes]:
    """`perf record` of the node's worker (the child of granian's process `pid`) into `out` until
    SIGINT; the node runs with PYTHONPERFSUPPORT=1, so Python functions show by name."""
    worker = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()[0]
    argv = ["perf", "record", "-F", "2000", "--call-graph", "dwarf,16384", "-p", worker, "-o", str(out)]
    recorder = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)  # it attaches to each thread before sampling
    return recorder


def _write_version(directory: Path, body: str) -> bytes:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "edge.toml").write_text(f'name = "{FUNCTION}"\n')
    (directory / "main.py").write_text(f"def handler(request):\n    return {body!r}\n")
    return bundle.pack(directory)


def _get(port: int, path: str) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def _deploy(admin: OriginClient, root: Path, number: int, applied: Path) -> tuple[str, float]:
    """Deploy a new body and wait until the node switched to it; returns the body and deploy →
    switch (seconds)."""
    body = f"deploy {number} {time.time_ns()}"
    data = _write_version(root / "function", body)
    before = applied.stat().st_mtime_ns if applied.exists() else 0
    admin.deploy(FUNCTION, data)
    returned = time.time_ns()
    deadline = time.monotonic() + DEADLINE_S
    while True:
        try:
            mtime = applied.stat().st_mtime_ns
        except FileNotFoundError:
            mtime = 0
        if mtime != before and bundle.digest(data) in applied.read_text():
            break
        if time.monotonic() >= deadline:
            raise TimeoutError(f"deploy {number} did not go live on the node within {DEADLINE_S} s")
        time.sleep(0.001)
    return body, max(0, mtime - returned) / 1e9


def _check(port: int, body: str) -> None:
    """The node answers the body just deployed."""
    status, got = _get(port, f"/{FUNCTION}")
    if (status, got) != (200, body.encode()):
        raise RuntimeError(f"the node switched to {body!r} but answered {status} {got[:200]!r}")


def measure(
    deploys: int = 20, node_env: dict[str, str] | None = None, perf: Path | None = None
) -> list[Deploy]:
    """Per deploy: the node's CPU (net of idle long-polling and with it) and deploy → live.

    Parameters
    ----------
    deploys:
        Deploys of the hello function to measure (after WARMUP unmeasured ones).
    node_env:
        Extra environment for the node.
    perf:
        Where `perf record` writes a profile of the node's worker over the measured deploys
        (`perf report -i FILE`; perf must be installed and allowed to trace the node).

    Raises TimeoutError when a deploy has not gone live within DEADLINE_S seconds.
    """
    if deploys < 1:
        raise ValueError(f"Expected deploys >= 1, got {deploys!r}")
    with tempfile.TemporaryDirectory(prefix="edge-deploy-cpu-") as tmp:
        root = Path(tmp)
        origin_port, port = free_port(), free_port()
        origin_url = f"http://127.0.0.1:{origin_port}"
        argv = edge_command("origin", "--port", str(origin_port), "--data", str(root / "origin"))
        with _server(argv, f"{origin_url}/v1/health", root / "origin.log", environ({})):
            admin = OriginClient(origin_url, (root / "origin" / "admin-token").read_text().strip())
            token_file = node_token_file(root)
            argv = edge_command("node", "--origin", origin_url, "--token-file", str(token_file))
            argv += ["--port", str(port), "--data", str(root / "node"), "--workers", "1"]
            extra = {"PYTHONPERFSUPPORT": "1"} if perf is not None else {}
            env = environ({"EDGE_LOG_LEVEL": "warning", **extra, **(node_env or {})})
            ready = f"http://127.0.0.1:{port}/_edge/ready"
            with _server(argv, ready, root / "node.log", env) as group:
                applied = root / "node" / "applied.json"
                for number in range(WARMUP):
                    _check(port, _deploy(admin, root, number, applied)[0])
                    time.sleep(SETTLE_S)
                cpu, started = group_cpu_seconds(group), time.monotonic()
                time.sleep(IDLE_S)
                idle_rate = (group_cpu_seconds(group) - cpu) / (time.monotonic() - started)
                recorder = _perf(group, perf) if perf is not None else None
                results = []
                for number in range(WARMUP, WARMUP + deploys):
                    cpu, started = group_cpu_seconds(group), time.monotonic()
                    body, live = _deploy(admin, root, number, applied)
                    to_live = group_cpu_seconds(group) - cpu
                    _check(port, body)
                    time.sleep(SETTLE_S)
                    spent = group_cpu_seconds(group) - cpu
                    idle = idle_rate * (time.monotonic() - started)
                    results.append(Deploy((spent - idle) * 1000, spent * 1000, live, to_live * 1000))
                if recorder is not None:
                    recorder.send_signal(signal.SIGINT)
                    recorder.wait(30)
                return results


def main(argv: list[str] | None = None) -> int:
    """Run `measure` and print the node's CPU per deploy and deploy → live."""
    parser = argparse.ArgumentParser(description="The CPU one node spends applying a deploy.")
    parser.add_argument("--deploys", type=int, default=20, help="deploys to measure (default 20)")
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="set in the node's environment, e.g. EDGE_WARM_IMPORTS=json (repeatable)",
    )
    parser.add_argument(
        "--perf", type=Path, metavar="FILE", help="record the node's worker with perf into FILE"
    )
    args = parser.parse_args(argv)
    bad = [item for item in args.env if "=" not in item]
    if bad:
        parser.error(f"--env: Expected NAME=VALUE, got {bad[0]!r}")
    node_env = dict(item.split("=", 1) for item in args.env)
    results = measure(args.deploys, node_env, args.perf)
    cpu = [result.cpu_ms for result in results]
    raw = [result.raw_cpu_ms for result in results]
    live = [result.live_s * 1000 for result in results]
    print(f"one node, {len(results)} deploys of {FUNCTION} (/proc CPU ticks of {1000 // _TICK} ms):")
    print(f"  node CPU per deploy: mean {statistics.fmean(cpu):.1f} ms, p50 {statistics.median(cpu):.1f} ms")
    print(f"    idle long-polling included: mean {statistics.fmean(raw):.1f} ms")
    to_live = statistics.fmean(result.to_live_cpu_ms for result in results)
    print(f"    until the switch: mean {to_live:.1f} ms (the rest comes after it)")
    print(f"  deploy -> live: p50 {percentile(live, 50):.0f} ms, p99 {percentile(live, 99):.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
