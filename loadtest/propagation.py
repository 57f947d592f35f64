"""Deploy → live on every node: one origin and N nodes on loopback, timed per deploy.

For each deploy the clock starts when the admin API's deploy call returns (the bundle is stored
and the revision bumped) and stops when the last node answers with the new body; every node is
watched by its own thread over a keep-alive connection. Target (DESIGN.md): p99 ≤ 1 s on 10+ nodes.

    .venv/bin/python loadtest/propagation.py --nodes 10 --deploys 20
"""

from __future__ import annotations

import argparse
import http.client
import math
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edge import bundle
from edge.control.client import OriginClient
from loadtest._servers import ROOT, Server, free_port

__all__ = ["main", "measure", "percentile"]

FUNCTION = "propagation"
# How long one deploy may take to reach every node before the run is declared broken.
DEADLINE_S = 10.0
# Pause between two polls of one node: fine enough for millisecond figures, and it leaves the
# two cores to the nodes rather than to ten spinning client threads.
POLL_INTERVAL_S = 0.005
# Deploys are spaced like a person's (or a CI job's) would be: a node's after-work for one deploy
# (retiring the old isolate, refilling its warm pool) is not charged to the next one.
PAUSE_S = 0.5


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank percentile `q` (0-100] of `values`."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def environ(extra: dict[str, str]) -> dict[str, str]:
    """This environment without EDGE_* (an operator's settings must not change what is measured)."""
    return {**{k: v for k, v in os.environ.items() if not k.startswith("EDGE_")}, **extra}


def edge_command(*args: str) -> list[str]:
    """argv of `edge ARGS` in this Python."""
    return [sys.executable, "-m", "edge", *args]


def node_token_file(root: Path) -> Path:
    """A node token made with `edge origin token create` on the origin data in `root/origin`,
    written to `root/node-token` (0600) for `--token-file`."""
    token = subprocess.run(
        edge_command("origin", "token", "create", "--role", "node", "--data", str(root / "origin")),
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        env=environ({}),
    ).stdout.strip()
    token_file = root / "node-token"
    token_file.touch(mode=0o600)
    token_file.write_text(token + "\n")
    return token_file


class _Server(Server):
    """`Server` with exactly this environment (it merges os.environ, which may carry EDGE_*)."""

    def __init__(self, argv: list[str], ready_url: str, env: dict[str, str], log_path: Path) -> None:
        super().__init__(argv, ready_url, log_path=log_path)
        self.env = env


def _start(server: Server) -> None:
    """Start `server`; when it fails, say why with the end of its log (the log dies with the run)."""
    try:
        server.start(60)
    except (RuntimeError, TimeoutError) as exc:
        tail = server.log_path.read_text(errors="replace")[-2000:] if server.log_path else ""
        raise RuntimeError(f"edge {server.argv[3]}: {exc}\n{tail}") from None


def _write_version(directory: Path, body: str, kind: str) -> bytes:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "edge.toml").write_text(f'name = "{FUNCTION}"\n')
    prefix = "async def" if kind == "async" else "def"
    (directory / "main.py").write_text(f"{prefix} handler(request):\n    return {body!r}\n")
    return bundle.pack(directory)


class _Watcher:
    """One node, polled over one keep-alive connection until it serves an expected body."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)

    def wait(self, path: str, body: bytes, deadline: float) -> float | None:
        """The monotonic time the node first answered 200 with `body`, or None at the deadline."""
        while True:
            try:
                self.connection.request("GET", path)
                response = self.connection.getresponse()
                data = response.read()
            except (OSError, http.client.HTTPException):
                self.connection.close()
                self.connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
            else:
                if response.status == 200 and data == body:
                    return time.monotonic()
            if time.monotonic() >= deadline:
                return None
            time.sleep(POLL_INTERVAL_S)

    def close(self) -> None:
        self.connection.close()


def _wait_registered(admin: OriginClient, count: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        live = [node for node in admin.nodes().nodes if node.live]
        if len(live) >= count:
            return
        if time.monotonic() >= deadline:
            raise TimeoutError(f"only {len(live)} of {count} nodes registered with the origin in {timeout} s")
        time.sleep(0.05)


def measure(nodes: int = 10, deploys: int = 20, kind: str = "sync") -> list[float]:
    """Seconds from each deploy call returning to every node serving the new body.

    Parameters
    ----------
    nodes:
        Node processes to start (one granian worker each), all syncing from one origin.
    deploys:
        Deploys of the function to time, each with a different body.
    kind:
        "sync" or "async" handler (an async one also warms asyncio in each new isolate).

    Raises TimeoutError when a deploy has not reached every node within DEADLINE_S seconds.
    """
    if nodes < 1 or deploys < 1:
        raise ValueError(f"Expected nodes >= 1 and deploys >= 1, got nodes={nodes!r}, deploys={deploys!r}")
    with tempfile.TemporaryDirectory(prefix="edge-propagation-") as tmp:
        root = Path(tmp)
        servers: list[Server] = []
        watchers: list[_Watcher] = []
        try:
            origin_port = free_port()
            origin_url = f"http://127.0.0.1:{origin_port}"
            origin = _Server(
                edge_command("origin", "--port", str(origin_port), "--data", str(root / "origin")),
                f"{origin_url}/v1/health",
                environ({}),
                root / "origin.log",
            )
            servers.append(origin)
            _start(origin)
            admin = OriginClient(origin_url, (root / "origin" / "admin-token").read_text().strip())
            token_file = node_token_file(root)
            ports = [free_port() for _ in range(nodes)]
            for index, port in enumerate(ports):
                argv = edge_command(
                    "node", "--origin", origin_url, "--token-file", str(token_file), "--port", str(port)
                )
                argv += ["--data", str(root / f"node{index}"), "--workers", "1"]
                env = environ({"EDGE_LOG_LEVEL": "warning"})
                log = root / f"node{index}.log"
                servers.append(_Server(argv, f"http://127.0.0.1:{port}/_edge/ready", env, log))
            with ThreadPoolExecutor(nodes) as pool:
                list(pool.map(_start, servers[1:]))
            _wait_registered(admin, nodes, 60)
            watchers = [_Watcher(port) for port in ports]
            path = f"/{FUNCTION}"
            seconds = []
            with ThreadPoolExecutor(nodes) as pool:
                for number in range(1, deploys + 1):
                    time.sleep(PAUSE_S)
                    body = f"deploy {number} {time.time_ns()}"
                    data = _write_version(root / "function", body, kind)
                    admin.deploy(FUNCTION, data)
                    started = time.monotonic()
                    deadline = started + DEADLINE_S
                    expected = body.encode()
                    wait = partial(_Watcher.wait, path=path, body=expected, deadline=deadline)
                    arrived = list(pool.map(wait, watchers))
                    late = [ports[i] for i, when in enumerate(arrived) if when is None]
                    if late:
                        raise TimeoutError(
                            f"deploy {number} did not reach the nodes on ports {late} within {DEADLINE_S} s"
                        )
                    seconds.append(max(when for when in arrived if when is not None) - started)
            return seconds
        finally:
            for watcher in watchers:
                watcher.close()
            # The nodes first (in parallel), then the origin, so no long poll holds the origin up.
            with ThreadPoolExecutor(max(1, len(servers) - 1)) as pool:
                list(pool.map(lambda server: server.stop(), servers[1:]))
            if servers:
                servers[0].stop()


def main(argv: list[str] | None = None) -> int:
    """Run `measure` and print p50, p99 and max."""
    parser = argparse.ArgumentParser(description="Time deploy → live on every node of a loopback fleet.")
    parser.add_argument("--nodes", type=int, default=10, help="node processes (default 10)")
    parser.add_argument("--deploys", type=int, default=20, help="deploys to time (default 20)")
    parser.add_argument(
        "--handler", choices=("sync", "async"), default="sync", help="the deployed handler (default sync)"
    )
    args = parser.parse_args(argv)
    seconds = measure(args.nodes, args.deploys, args.handler)
    print(f"deploy → live on all {args.nodes} nodes, {len(seconds)} deploys:")
    print(f"  p50 {percentile(seconds, 50) * 1000:.0f} ms")
    print(f"  p99 {percentile(seconds, 99) * 1000:.0f} ms")
    print(f"  max {max(seconds) * 1000:.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
