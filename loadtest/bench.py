"""`make bench`: the node against a bare granian app, side by side in one run, reported as ratios.

Throughput: wrk drives the bare app and the node (examples/hello, examples/cached) in turn, same
connections, duration and granian settings, for several rounds; ratios are taken within a round.
Cold start: time to the first response of functions whose isolates do not exist yet.
Ceiling: the node's app with the isolate hop replaced by a canned reply (ceiling_app.py).
Propagation: one origin and 10 nodes on loopback, time from a deploy returning to every node
serving the new version.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import msgspec

from edge.node.app import SETTINGS_VARIABLE
from edge.node.settings import load_settings
from loadtest import churn
from loadtest._servers import ROOT, Server, free_port
from loadtest.propagation import measure, percentile

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


class WrkResult(NamedTuple):
    """One wrk run: requests per second, latency percentiles in ms, server CPU per request in us."""

    rps: float
    p50: float
    p99: float
    errors: int
    cpu_us: float = 0.0


def process_tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by a process and its children (granian's workers)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    pids = [pid]
    while pids:
        current = pids.pop()
        try:
            with open(f"/proc/{current}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as children:
                    pids.extend(int(child) for child in children.read().split())
        except FileNotFoundError:  # exited meanwhile
            continue
        total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def ensure_wrk() -> str:
    """The path of wrk, installing Debian's package when running as root; exits with advice otherwise."""
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print("wrk is missing: installing Debian's package", file=sys.stderr)
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True)
        found = shutil.which("wrk")
    if not found:
        sys.exit("error: wrk is not installed; install it with `sudo apt-get install wrk` and run again")
    return found


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if not match:
        raise ValueError(f"wrk printed a latency of {text!r}; expected a number with us, ms or s")
    return float(match.group(1)) * _UNITS[match.group(2)]


def run_wrk(
    wrk: str,
    url: str,
    connections: int,
    seconds: int,
    threads: int,
    server: Server | None = None,
    headers: tuple[str, ...] = (),
    script: str | None = None,
) -> WrkResult:
    """Drive `url` with wrk and parse its report; with `server`, also its CPU time per request.

    `headers` ("Name: value") go with every request, besides wrk's own Host; `script`: a wrk Lua
    script (e.g. one that picks each request's path)."""
    cpu_before = process_tree_cpu(server.pid) if server is not None else 0.0
    extra = [arg for header in headers for arg in ("-H", header)]
    out = subprocess.run(
        [wrk, f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", *extra]
        + (["-s", script] if script else [])
        + [url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    errors = sum(
        int(n) for n in re.findall(r"(?:Non-2xx or 3xx responses|Socket errors:.*?timeout)\s*:?\s*(\d+)", out)
    )
    cpu_us = 0.0
    if server is not None:
        requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
        cpu_us = (process_tree_cpu(server.pid) - cpu_before) / max(requests, 1) * 1e6
    return WrkResult(rps, p50, p99, errors, cpu_us)


def bare_server(port: int, interface: str = "asgi") -> Server:
    """The baseline under the same granian settings as the node (1 worker, uvloop, HTTP/1), on
    granian's ASGI interface (the bench's reference) or its native RSGI one."""
    target = "loadtest.bare_app:app" if interface == "asgi" else "loadtest.bare_app:rsgi_app"
    argv = [sys.executable, "-m", "granian", "--interface", interface, "--loop", "uvloop", "--http", "1"]
    argv += ["--workers", "1", "--port", str(port), "--log-level", "warning", target]
    return Server(argv, f"http://127.0.0.1:{port}/")


def ceiling_server(port: int, factory: str) -> Server:
    """The node's app with a canned isolate reply (loadtest/ceiling_app.py), bare's granian settings.

    The app gets the settings `node_server`'s node would load: the defaults, examples/, its log level.
    """
    settings = load_settings(None, {"EDGE_LOG_LEVEL": "warning"}, {"functions": str(ROOT / "examples")})
    argv = [sys.executable, "-m", "granian", "--interface", "asgi", "--loop", "uvloop", "--http", "1"]
    argv += ["--workers", "1", "--port", str(port), "--log-level", "warning"]
    argv += ["--factory", f"loadtest.ceiling_app:{factory}"]
    env = {"PYTHONPATH": str(ROOT), SETTINGS_VARIABLE: msgspec.json.encode(settings).decode()}
    return Server(argv, f"http://127.0.0.1:{port}/_edge/ready", env=env)


def node_server(port: int, functions: Path, **env: str) -> Server:
    """An edge node serving `functions` (1 worker, uvloop, HTTP/1, the defaults; EDGE_INTERFACE=asgi
    for the ASGI front end)."""
    argv = [sys.executable, "-m", "edge", "node", "--functions", str(functions), "--port", str(port)]
    return Server(argv, f"http://127.0.0.1:{port}/_edge/ready", env={"EDGE_LOG_LEVEL": "warning", **env})


def bench_functions(root: Path, names: tuple[str, ...] = ("hello", "cached")) -> None:
    """Copy the examples the benchmarks drive into `root`, plus `hello-process`: the same hello
    function with `isolation = "process"`."""
    for name in names:
        shutil.copytree(ROOT / "examples" / name, root / name)
    shutil.copytree(ROOT / "examples" / "hello", root / "hello-process")
    manifest = root / "hello-process" / "edge.toml"
    manifest.write_text('name = "hello-process"\nisolation = "process"\n' + manifest.read_text())
    for kind in KINDS:
        shutil.copytree(Path(__file__).parent / "kinds" / kind, root / f"kind-{kind}")


# Handler kinds driven beside the `edge` kind's hello (loadtest/kinds/: the same answer each).
KINDS = ("lambda", "openfaas", "asgi", "wsgi")

# What a browser sends besides Host (Chrome's navigation request, a session cookie): the
# cached-hit rows with "browser headers" carry these 14, 15 headers with Host.
BROWSER_HEADERS = (
    "Connection: keep-alive",
    'sec-ch-ua: "Chromium";v="131", "Not_A Brand";v="24"',
    "sec-ch-ua-mobile: ?0",
    'sec-ch-ua-platform: "Linux"',
    "Upgrade-Insecure-Requests: 1",
    "User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko)"
    " Chrome/131.0.0.0 Safari/537.36",
    "Accept: text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8",
    "Sec-Fetch-Site: none",
    "Sec-Fetch-Mode: navigate",
    "Sec-Fetch-User: ?1",
    "Sec-Fetch-Dest: document",
    "Accept-Encoding: gzip, deflate, br, zstd",
    "Accept-Language: en-US,en;q=0.9,de;q=0.8",
    "Cookie: session=3f2a9c0e7b5d4e1f8a6b2c9d0e3f4a5b; theme=dark",
)


def throughput(
    wrk: str,
    rounds: int,
    seconds: int,
    connections: int,
    threads: int,
    ceiling: bool = False,
    kinds: bool = True,
) -> dict[str, list[WrkResult]]:
    """All servers up at once; each round drives every target in turn, seconds apart.

    This machine's speed drifts (it shares its host), so a ratio compares runs of one round.
    Only the target being driven does any work: an idle granian costs nothing. `ceiling` adds
    the node's app with the isolate hop replaced by a canned reply (see ceiling_app.py); `kinds`
    the hello of every other handler kind (loadtest/kinds/).
    """
    hello, cached = "node: hello through an isolate", "node: cached hit"
    in_process = "node: hello through a process"
    bare_port, rsgi_port, node_port, asgi_port = free_port(), free_port(), free_port(), free_port()
    with contextlib.ExitStack() as stack:
        functions = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        bench_functions(functions)
        bare = stack.enter_context(bare_server(bare_port))
        bare_rsgi = stack.enter_context(bare_server(rsgi_port, "rsgi"))
        node = stack.enter_context(node_server(node_port, functions))
        asgi_node = stack.enter_context(node_server(asgi_port, functions, EDGE_INTERFACE="asgi"))
        node_url, asgi_url = f"http://127.0.0.1:{node_port}", f"http://127.0.0.1:{asgi_port}"
        # name -> (url, server, request headers); the node's default front end is RSGI.
        targets: dict[str, tuple[str, Server, tuple[str, ...]]] = {
            "bare granian": (f"http://127.0.0.1:{bare_port}/", bare, ()),
            "bare granian, rsgi": (f"http://127.0.0.1:{rsgi_port}/", bare_rsgi, ()),
            "bare granian, browser headers": (f"http://127.0.0.1:{bare_port}/", bare, BROWSER_HEADERS),
            hello: (f"{node_url}/hello", node, ()),
            "node asgi: hello through an isolate": (f"{asgi_url}/hello", asgi_node, ()),
            in_process: (f"{node_url}/hello-process", node, ()),
            cached: (f"{node_url}/cached", node, ()),
            "node asgi: cached hit": (f"{asgi_url}/cached", asgi_node, ()),
            "node: cached hit, browser headers": (f"{node_url}/cached", node, BROWSER_HEADERS),
            "node asgi: cached hit, browser headers": (f"{asgi_url}/cached", asgi_node, BROWSER_HEADERS),
        }
        if kinds:
            for kind in KINDS:
                targets[kind_row(kind)] = (f"{node_url}/kind-{kind}", node, ())
        if ceiling:
            for factory, name in (
                ("instant", "ceiling: reply at once"),
                ("next_iteration", "ceiling: reply next turn"),
            ):
                port = free_port()
                targets[name] = (
                    f"http://127.0.0.1:{port}/hello",
                    stack.enter_context(ceiling_server(port, factory)),
                    (),
                )
        results: dict[str, list[WrkResult]] = {name: [] for name in targets}
        for url, _, headers in targets.values():
            run_wrk(wrk, url, connections, 1, threads, headers=headers)  # warm-up (and fills the cache)
        for _ in range(rounds):
            for name, (url, server, headers) in targets.items():
                results[name].append(run_wrk(wrk, url, connections, seconds, threads, server, headers))
    return results


def kind_row(kind: str) -> str:
    """The throughput table's row for the hello of handler kind `kind`."""
    return f"node: hello, kind = {kind}"


def cold_starts(count: int, isolation: str = "interpreter") -> list[float]:
    """First-response times (ms) of `count` functions whose isolates start on their first request."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for index in range(count):
            shutil.copytree(ROOT / "examples" / "hello", root / f"cold{index:02d}")
            manifest = root / f"cold{index:02d}" / "edge.toml"
            manifest.write_text(f'isolation = "{isolation}"\n' + manifest.read_text())
        port = free_port()
        times = []
        with node_server(port, root, EDGE_PRELOAD="false"):
            for index in range(count):
                url = f"http://127.0.0.1:{port}/cold{index:02d}"
                started = time.perf_counter()
                with urllib.request.urlopen(url, timeout=10) as response:
                    response.read()
                times.append((time.perf_counter() - started) * 1000)
                # Space the cold ones a little: the warm pool refills in the background (a spawned
                # child takes longer to make than an interpreter).
                time.sleep(0.05 if isolation == "interpreter" else 0.3)
        return times


def _worker_pids(pid: int) -> list[int]:
    """Granian's workers: its children but multiprocessing's helpers (a resource tracker on 3.14)."""
    found = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as children:
            found += [int(child) for child in children.read().split()]
    workers = []
    for child in found:
        with open(f"/proc/{child}/cmdline", "rb") as cmdline:
            if b"resource_tracker" not in cmdline.read():
                workers.append(child)
    return workers


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=0.5) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def respawn_times(count: int) -> list[float]:
    """Outage (ms) after the worker of a supervised 1-worker node is killed: SIGKILL until /hello
    answers again.

    What a segfault or the OOM killer costs with `workers = 1` and `supervise = true` (granian
    respawns the worker; it loads every function again before it answers); a node in one process
    (the default) is restarted by its service manager instead. Crashes are spaced 1 s apart.
    """
    port = free_port()
    url = f"http://127.0.0.1:{port}/hello"
    times = []
    with node_server(port, ROOT / "examples", EDGE_SUPERVISE="true") as node:
        for _ in range(count):
            (worker,) = _worker_pids(node.pid)
            os.kill(worker, signal.SIGKILL)
            killed = time.perf_counter()
            while not _answers(url):
                time.sleep(0.002)
            times.append((time.perf_counter() - killed) * 1000)
            time.sleep(1.0)
    return times


def main() -> int:
    """Run the benchmarks and print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seconds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (it shares the 2 cores)")
    parser.add_argument("--cold", type=int, default=24, help="functions for the cold-start figure")
    parser.add_argument(
        "--churn", type=int, default=300, help="never-run functions called back to back (churn.py; 0: skip)"
    )
    parser.add_argument(
        "--parallel", type=int, default=20, help="CPU-bound requests per round, two functions (0: skip)"
    )
    parser.add_argument("--nodes", type=int, default=10, help="nodes for the propagation figure (0: skip)")
    parser.add_argument("--deploys", type=int, default=20, help="deploys for the propagation figure")
    parser.add_argument(
        "--respawns", type=int, default=5, help="worker kills for the respawn figure (0: skip)"
    )
    parser.add_argument(
        "--kinds",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also drive the hello of every other handler kind (lambda, openfaas, asgi, wsgi)",
    )
    parser.add_argument(
        "--ceiling",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also drive the node app with a canned isolate reply: the best the isolate hop could do",
    )
    args = parser.parse_args()
    wrk = ensure_wrk()
    wrk_args = f"-t{args.threads} -c{args.connections} -d{args.seconds}s"
    print(f"throughput: wrk {wrk_args}, {args.rounds} rounds, every target in turn each round")
    results = throughput(
        wrk, args.rounds, args.seconds, args.connections, args.threads, args.ceiling, args.kinds
    )
    bare = results["bare granian"]
    print(
        f"| {'what':<38} | {'req/s':>9} | {'p50 ms':>7} | {'p99 ms':>7} | {'ratio':>6} | {'ratios':>10} "
        f"| {'cpu us/req':>10} |"
    )
    print(f"| {'-' * 38} | {'-' * 9} | {'-' * 7} | {'-' * 7} | {'-' * 6} | {'-' * 10} | {'-' * 10} |")
    for name, runs in results.items():
        rps = statistics.median(r.rps for r in runs)
        p50 = statistics.median(r.p50 for r in runs)
        p99 = statistics.median(r.p99 for r in runs)
        cpu = statistics.median(r.cpu_us for r in runs)
        ratios = [run.rps / base.rps for run, base in zip(runs, bare, strict=True)]
        spread = f"{min(ratios):.2f}-{max(ratios):.2f}"
        print(
            f"| {name:<38} | {rps:>9.0f} | {p50:>7.2f} | {p99:>7.2f} | "
            f"{statistics.median(ratios):>5.2f}x | {spread:>10} | {cpu:>10.1f} |"
        )
    print("ratio: median over rounds of (target / bare in the same round); ratios: their range")
    print('node: the RSGI front end (the default); node asgi: the ASGI one (interface = "asgi")')
    print(
        f"browser headers: {len(BROWSER_HEADERS) + 1} request headers (Host and bench.py's BROWSER_HEADERS)"
    )
    print("cpu us/req: CPU time of the server's processes per request served (median over rounds)")
    if args.kinds:
        edge = results["node: hello through an isolate"]
        print("\nhandler kinds against the `edge` kind's hello, same round (target: >= 0.90x for")
        print("lambda and openfaas):")
        for kind in KINDS:
            ratios = [run.rps / base.rps for run, base in zip(results[kind_row(kind)], edge, strict=True)]
            print(
                f"kind = {kind:<9} {statistics.median(ratios):.2f}x of edge "
                f"(rounds {min(ratios):.2f}-{max(ratios):.2f})"
            )
    if args.cold:
        for isolation, what in (
            ("interpreter", "isolate"),
            ("process", "process isolate, warm pool of children"),
        ):
            times = sorted(cold_starts(args.cold, isolation))
            p50 = statistics.median(times)
            print(f"\ncold start (first response, {what} created on demand), {len(times)} functions:")
            print(f"p50 {p50:.1f} ms, min {times[0]:.1f} ms, max {times[-1]:.1f} ms")
    churn.report(args.churn, args.parallel)
    if args.respawns:
        times = sorted(respawn_times(args.respawns))
        print(
            f"\nworker respawn (supervise = true: SIGKILL the only worker until /hello answers again),"
            f" {len(times)} kills:"
        )
        print(f"p50 {statistics.median(times):.0f} ms, min {times[0]:.0f} ms, max {times[-1]:.0f} ms")
    if args.nodes:
        seconds = measure(args.nodes, args.deploys)
        print(f"\ndeploy -> live on all {args.nodes} nodes (one origin, loopback), {len(seconds)} deploys:")
        print(
            f"p50 {percentile(seconds, 50) * 1000:.0f} ms, p99 {percentile(seconds, 99) * 1000:.0f} ms, "
            f"max {max(seconds) * 1000:.0f} ms"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
