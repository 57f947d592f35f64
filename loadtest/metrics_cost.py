"""What per-function metrics and the access log cost: the node's hello with both on, beside the same
app with both off, in one run.

    .venv/bin/python loadtest/metrics_cost.py [--rounds 10] [--seconds 3]

Both servers run the node's app under granian with the same settings (1 worker, uvloop, HTTP/1.1,
examples/hello, log level info, a runtime directory): "on" is `edge.node.app:create_app` as
`edge node` runs it (requests counted per function version, a sample written every second, one
JSON access line per request, written to a log file as journald or a file would take it); "off"
is the same app built with `metrics=False` and `access_log = false`. Each round drives both in
turn (the order alternating) with `wrk -t1 -c64`; a round's ratio compares the two within it,
because this VM's speed drifts. The target: on/off req/s >= 0.95.

"off" still builds each request's access line and calls the request hook (the app has one
request path). `--base DIR` adds a third server, "before": the node's app from another checkout
(e.g. `git worktree add /tmp/base <commit before the metrics>`), with no instrumentation at all.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
from pathlib import Path

import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edge.node.app import SETTINGS_VARIABLE, NodeApp, create_app
from edge.node.recycling import RUNTIME_DIR_VARIABLE
from edge.node.settings import load_settings
from loadtest._servers import ROOT, Server, free_port
from loadtest.bench import WrkResult, ensure_wrk, run_wrk


def without_metrics() -> NodeApp:
    """Granian factory: the node's app counting nothing per request (its access log is off too)."""
    return create_app(metrics=False)


# Settings that a checkout from before the metrics does not know (its settings refuse them).
NEW_FIELDS = ("access_log", "admin_host", "admin_port")


def _server(port: int, factory: str, access_log: bool, scratch: Path, name: str, tree: Path = ROOT) -> Server:
    flags = {"functions": str(scratch / "functions")}
    environ = {"EDGE_LOG_LEVEL": "info", "EDGE_ACCESS_LOG": str(access_log).lower()}
    settings = msgspec.to_builtins(load_settings(None, environ, flags))
    if tree != ROOT:
        settings = {key: value for key, value in settings.items() if key not in NEW_FIELDS}
    runtime = scratch / f"runtime-{port}"
    runtime.mkdir()
    argv = [sys.executable, "-m", "granian", "--interface", "asgi", "--loop", "uvloop", "--http", "1"]
    argv += ["--workers", "1", "--port", str(port), "--log-level", "warning", "--factory", factory]
    env = {
        "PYTHONPATH": str(tree),
        SETTINGS_VARIABLE: msgspec.json.encode(settings).decode(),
        RUNTIME_DIR_VARIABLE: str(runtime),
    }
    return Server(
        argv, f"http://127.0.0.1:{port}/_edge/ready", env=env, log_path=scratch / f"{name}.log", cwd=tree
    )


def main() -> int:
    """Run the rounds and print the medians and ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--seconds", type=int, default=3)
    parser.add_argument("--base", type=Path, help="another checkout: adds its node app as 'before'")
    args = parser.parse_args()
    wrk = ensure_wrk()
    servers = [
        ("off", "loadtest.metrics_cost:without_metrics", False, ROOT),
        ("on", "edge.node.app:create_app", True, ROOT),
    ]
    if args.base is not None:
        servers.append(("before", "edge.node.app:create_app", False, args.base.resolve()))
    results: dict[str, list[WrkResult]] = {name: [] for name, *_ in servers}
    with tempfile.TemporaryDirectory(prefix="metrics-cost-") as temporary, contextlib.ExitStack() as stack:
        scratch = Path(temporary)
        (scratch / "functions").mkdir()
        (scratch / "functions" / "hello").symlink_to(ROOT / "examples" / "hello")
        targets = {}
        for name, factory, access_log, tree in servers:
            port = free_port()
            server = stack.enter_context(_server(port, factory, access_log, scratch, name, tree))
            targets[name] = (f"http://127.0.0.1:{port}/hello", server)
        for url, server in targets.values():
            run_wrk(wrk, url, 64, 1, 1, server)  # warm-up
        for index in range(args.rounds):
            order = list(results) if index % 2 == 0 else list(reversed(results))
            for name in order:
                url, server = targets[name]
                results[name].append(run_wrk(wrk, url, 64, args.seconds, 1, server))
        served = sum(1 for line in (scratch / "on.log").open("rb") if line.startswith(b'{"time":'))
        samples = sorted(path.name for path in scratch.glob("runtime-*/metrics/worker-*.json"))
    print(f"hello, wrk -t1 -c64 -d{args.seconds}s, {args.rounds} rounds, every server in turn each round")
    print("on: metrics and access log on; off: both off; before: the base checkout (no instrumentation)")
    for name, runs in results.items():
        rps = statistics.median(run.rps for run in runs)
        cpu = statistics.median(run.cpu_us for run in runs)
        p99 = statistics.median(run.p99 for run in runs)
        print(f"{name:>6}: median {rps:.0f} req/s, p99 {p99:.2f} ms, {cpu:.1f} cpu us/req")
    for baseline in [name for name in results if name != "on"]:
        on, off = results["on"], results[baseline]
        ratios = [b.rps / a.rps for a, b in zip(off, on, strict=True)]
        cpu_ratio = statistics.median(r.cpu_us for r in on) / statistics.median(r.cpu_us for r in off)
        print(
            f"on/{baseline} req/s: median {statistics.median(ratios):.3f},"
            f" range {min(ratios):.3f}-{max(ratios):.3f} (target >= 0.95); cpu us/req {cpu_ratio:.3f}"
        )
    print(
        f"'on' wrote {served} access lines and its worker's metrics sample ({', '.join(samples) or 'none'})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
