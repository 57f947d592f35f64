"""Deploy → live through two origins on one PostgreSQL database and one S3 bucket.

Two origins share `--database postgresql://...` and `--blobs s3://...` (moto's S3 server, a
throwaway PostgreSQL cluster: loadtest/_backends.py). Half the nodes long-poll origin A, half
origin B; deploys alternate between A and B, so every deploy reaches half the nodes through the
other origin (the database's NOTIFY wakes that origin's long polls, and that origin fetches the
bundle from the bucket). The clock starts when the deploy call returns and stops when the last
node answers with the new body, as in propagation.py.

    .venv/bin/python loadtest/shared_origins.py --nodes 4 --deploys 20
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edge.control.client import OriginClient
from loadtest._backends import S3_ENV, postgres, s3_server
from loadtest._servers import Server, free_port
from loadtest.propagation import (
    DEADLINE_S,
    FUNCTION,
    PAUSE_S,
    _Server,
    _start,
    _wait_registered,
    _Watcher,
    _write_version,
    edge_command,
    environ,
    percentile,
)

__all__ = ["main", "measure"]


def measure(nodes: int = 4, deploys: int = 20) -> tuple[list[float], list[float]]:
    """Seconds from each deploy call returning to every node serving the new body, as (deploys
    through A, deploys through B).

    Parameters
    ----------
    nodes:
        Node processes (at least 2): the first half long-poll origin A, the rest origin B.
    deploys:
        Deploys to time, alternating between A and B.

    Raises TimeoutError when a deploy has not reached every node within DEADLINE_S seconds.
    """
    if nodes < 2 or deploys < 1:
        raise ValueError(f"Expected nodes >= 2 and deploys >= 1, got nodes={nodes!r}, deploys={deploys!r}")
    with tempfile.TemporaryDirectory(prefix="edge-shared-") as tmp, postgres() as cluster:
        root = Path(tmp)
        with s3_server(root / "moto.log") as s3:
            database, blobs = cluster.create(), f"s3://{s3.bucket()}/bundles"
            servers: list[Server] = []
            watchers: list[_Watcher] = []
            try:
                urls = []
                for name in ("a", "b"):
                    port = free_port()
                    urls.append(f"http://127.0.0.1:{port}")
                    data = root / name
                    if name == "b":  # the same keys as A, which made them
                        data.mkdir(mode=0o700)
                        for key in ("signing-key.pem", "secrets-key"):
                            shutil.copy2(root / "a" / key, data / key)
                    argv = edge_command("origin", "--port", str(port), "--data", str(data))
                    argv += ["--database", database, "--blobs", blobs, "--blobs-endpoint", s3.endpoint]
                    origin = _Server(argv, f"{urls[-1]}/v1/health", environ(S3_ENV), root / f"{name}.log")
                    servers.append(origin)
                    _start(origin)
                token = (root / "a" / "admin-token").read_text().strip()
                admins = [OriginClient(url, token) for url in urls]
                node_token = admins[0].create_token("node").token
                token_file = root / "node-token"
                token_file.touch(mode=0o600)
                token_file.write_text(node_token + "\n")
                ports = [free_port() for _ in range(nodes)]
                for index, port in enumerate(ports):
                    origin_url = urls[0] if index < nodes // 2 else urls[1]
                    argv = edge_command(
                        "node", "--origin", origin_url, "--token-file", str(token_file), "--port", str(port)
                    )
                    argv += ["--data", str(root / f"node{index}"), "--workers", "1"]
                    env = environ({"EDGE_LOG_LEVEL": "warning"})
                    servers.append(
                        _Server(argv, f"http://127.0.0.1:{port}/_edge/ready", env, root / f"node{index}.log")
                    )
                with ThreadPoolExecutor(nodes) as pool:
                    list(pool.map(_start, servers[2:]))
                _wait_registered(admins[0], nodes, 60)
                watchers = [_Watcher(port) for port in ports]
                return _time_deploys(admins, watchers, ports, root / "function", deploys)
            finally:
                for watcher in watchers:
                    watcher.close()
                with ThreadPoolExecutor(max(1, len(servers))) as pool:
                    list(pool.map(lambda server: server.stop(), servers[2:]))
                for server in servers[:2]:
                    server.stop()


def _time_deploys(
    admins: list[OriginClient], watchers: list[_Watcher], ports: list[int], directory: Path, deploys: int
) -> tuple[list[float], list[float]]:
    """Deploy `deploys` times, alternating between the two origins, timing each until all serve it."""
    through: tuple[list[float], list[float]] = ([], [])
    with ThreadPoolExecutor(len(watchers)) as pool:
        for number in range(1, deploys + 1):
            time.sleep(PAUSE_S)
            body = f"deploy {number} {time.time_ns()}"
            which = number % 2
            admins[which].deploy(FUNCTION, _write_version(directory, body, "sync"))
            started = time.monotonic()
            wait = partial(
                _Watcher.wait, path=f"/{FUNCTION}", body=body.encode(), deadline=started + DEADLINE_S
            )
            arrived = list(pool.map(wait, watchers))
            late = [ports[i] for i, when in enumerate(arrived) if when is None]
            if late:
                raise TimeoutError(
                    f"deploy {number} did not reach the nodes on ports {late} within {DEADLINE_S} s"
                )
            through[which].append(max(when for when in arrived if when is not None) - started)
    return through


def main(argv: list[str] | None = None) -> int:
    """Run `measure` and print p50, p99 and max for all deploys and through each origin."""
    parser = argparse.ArgumentParser(description="Time deploy → live through two origins on PostgreSQL.")
    parser.add_argument(
        "--nodes", type=int, default=4, help="node processes, half on each origin (default 4)"
    )
    parser.add_argument("--deploys", type=int, default=20, help="deploys to time (default 20)")
    args = parser.parse_args(argv)
    via_a, via_b = measure(args.nodes, args.deploys)
    print(f"deploy → live on all {args.nodes} nodes (half polling each origin), {args.deploys} deploys:")
    for label, seconds in (("all", via_a + via_b), ("via A", via_a), ("via B", via_b)):
        if seconds:
            print(
                f"  {label:6} p50 {percentile(seconds, 50) * 1000:.0f} ms"
                f"  p99 {percentile(seconds, 99) * 1000:.0f} ms  max {max(seconds) * 1000:.0f} ms"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
