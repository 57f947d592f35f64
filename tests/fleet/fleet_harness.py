"""A fleet on loopback for the fleet tests: one real origin, real nodes in origin mode, the CLI.

Every process is `python -m edge ...` in its own session on a free port, polled until it answers
and stopped with SIGTERM, then SIGKILL. Environment variables starting with `EDGE_` are removed
from the test's environment first, so an operator's settings cannot leak into a test.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import signal
import ssl
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from node_harness import Reply

from edge import bundle
from edge.control.client import OriginClient
from loadtest._servers import free_port

REPO = Path(__file__).resolve().parents[2]

# Nodes long-poll for at most this long, so an origin stops quickly (granian waits for requests
# in flight before it exits) and a stopped origin is noticed within a second or two.
POLL_TIMEOUT_S = "2"
# The origin asks nodes to report every second; a node is live when seen within 3 s.
HEARTBEAT_S = "1"


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment without `EDGE_*` variables, plus `extra`."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("EDGE_")}
    env.update(extra or {})
    return env


def run_edge(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    """Run `edge ARGS...` to completion and capture its text output."""
    return subprocess.run(
        [sys.executable, "-m", "edge", *args],
        capture_output=True,
        text=True,
        env=clean_env(env),
        cwd=REPO,
        timeout=timeout,
        check=False,
    )


def wait_for[T](check: Callable[[], T | None], timeout: float, what: str, interval: float = 0.02) -> T:
    """Call `check` until it returns something truthy (returned) or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = check()
        except (OSError, http.client.HTTPException) as exc:  # a process still starting or stopping
            last = exc
        else:
            if value:
                return value
            last = value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}; last: {last!r}")
        time.sleep(interval)


def request(port: int, path: str, timeout: float = 10.0, context: ssl.SSLContext | None = None) -> Reply:
    """One GET to 127.0.0.1:port on a fresh connection (HTTPS when given a `context`)."""
    connection = (
        http.client.HTTPSConnection("127.0.0.1", port, timeout=timeout, context=context)
        if context is not None
        else http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    )
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
    finally:
        connection.close()


def other_public_key() -> str:
    """The base64 raw public key of a fresh ed25519 key: one that signed nothing of the origin's."""
    raw = (
        Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    )
    return base64.b64encode(raw).decode("ascii")


def write_version(root: Path, body: str, name: str = "hello", code: str | None = None) -> tuple[Path, str]:
    """A function directory `root/<body>` whose handler answers `body`; returns it and its version."""
    directory = root / body
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "edge.toml").write_text(f'name = "{name}"\n')
    default = f"""\
        async def handler(request):
            return {body!r}
        """
    (directory / "main.py").write_text(textwrap.dedent(code if code is not None else default))
    return directory, bundle.digest(bundle.pack(directory))


class Process:
    """A server subprocess that can be started, stopped and started again on the same port."""

    def __init__(self, argv: list[str], ready_url: str, log: Path, env: dict[str, str]) -> None:
        self.argv = argv
        self.ready_url = ready_url
        self.log = log
        self.environ = env
        self.process: subprocess.Popen[bytes] | None = None
        # Set for a process that serves HTTPS (ready_url https://...): how to trust it.
        self.context: ssl.SSLContext | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, timeout: float = 30.0) -> None:
        """Start the process (its output appended to `log`) and wait until `ready_url` answers 200."""
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                self.argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=REPO,
                env=self.environ,
                start_new_session=True,
            )
        host, _, rest = self.ready_url.partition("://")[2].partition("/")
        port = int(host.rpartition(":")[2])
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.argv[3]} exited with {self.process.returncode}:\n{self.output()}")
            try:
                if request(port, "/" + rest, timeout=2, context=self.context).status == 200:
                    return
            except (OSError, http.client.HTTPException):
                pass
            if time.monotonic() >= deadline:
                self.stop()
                raise RuntimeError(
                    f"{self.ready_url} did not answer 200 within {timeout} s:\n{self.output()}"
                )
            time.sleep(0.02)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, wait up to `timeout` seconds, then SIGKILL the whole process group."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


class Origin(Process):
    """`edge origin` with its data directory; restartable on the same port and data."""

    def __init__(self, data: Path, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data = data
        argv = [sys.executable, "-m", "edge", "origin", "--port", str(self.port), "--data", str(data)]
        argv += ["--heartbeat-interval", HEARTBEAT_S]
        super().__init__(argv, f"{self.url}/v1/health", log, clean_env())
        # The certificate an https origin's clients pin (EDGE_ORIGIN_CA, --origin-ca).
        self.ca_file: str | None = None

    @property
    def admin_token(self) -> str:
        return (self.data / "admin-token").read_text().strip()

    def env(self) -> dict[str, str]:
        """What `edge deploy` and friends need to talk to this origin."""
        pinned = {"EDGE_ORIGIN_CA": self.ca_file} if self.ca_file else {}
        return {"EDGE_ORIGIN": self.url, "EDGE_TOKEN": self.admin_token, **pinned}

    def admin(self) -> OriginClient:
        return OriginClient(self.url, self.admin_token, timeout=10.0, ca_file=self.ca_file)

    def node_token(self, *args: str) -> str:
        """A new node token (`args`: e.g. --node ID, --expires 1h)."""
        result = run_edge("origin", "token", "create", "--role", "node", "--data", str(self.data), *args)
        assert result.returncode == 0 and result.stderr.startswith("token "), result
        return result.stdout.strip()

    def blob_path(self, version: str) -> Path:
        """Where the origin keeps the bundle `version` (edge/origin/blobs.py: root/<2 hex>/<digest>)."""
        return self.data / "blobs" / version[:2] / version

    def live_nodes(self) -> set[str]:
        return {node.info.node_id for node in self.admin().nodes().nodes if node.live}

    def node_report(self, node_id: str) -> dict[str, Any] | None:
        """The node's last report as `edge nodes --json` prints it."""
        result = run_edge("nodes", "--json", env=self.env())
        assert (result.returncode, result.stderr) == (0, ""), result
        for node in json.loads(result.stdout)["nodes"]:
            if node["info"]["node_id"] == node_id:
                report: dict[str, Any] | None = node["report"]
                return report
        return None

    def reported(self, node_id: str, revision: int, timeout: float = 10.0) -> dict[str, Any]:
        """The node's report once it says `applied_revision` >= `revision` (waits up to `timeout`)."""

        def check() -> dict[str, Any] | None:
            report = self.node_report(node_id)
            return report if report is not None and report["applied_revision"] >= revision else None

        return wait_for(check, timeout, f"node {node_id} to report revision {revision}")


class Node(Process):
    """`edge node --origin ...` with its state directory; restartable on the same port and data."""

    def __init__(
        self,
        origin: Origin,
        token: str,
        data: Path,
        log: Path,
        origin_key: str | None,
        token_via: str = "file",
    ) -> None:
        """`token_via`: "file" (--token-file, what operators should do), "env" (EDGE_TOKEN) or
        "argv" (the deprecated --token)."""
        self.port = free_port()
        self.data = data
        self.token = token
        argv = [sys.executable, "-m", "edge", "node", "--origin", origin.url]
        argv += ["--data", str(data), "--port", str(self.port)]
        if origin_key is not None:
            argv += ["--origin-key", origin_key]
        extra = {"EDGE_LOG_LEVEL": "info", "EDGE_POLL_TIMEOUT_S": POLL_TIMEOUT_S}
        if token_via == "file":
            token_file = data.with_name(f"{data.name}.token")
            token_file.write_text(token + "\n")
            token_file.chmod(0o600)
            argv += ["--token-file", str(token_file)]
        elif token_via == "env":
            extra["EDGE_TOKEN"] = token
        else:
            argv += ["--token", token]
        env = clean_env(extra)
        super().__init__(argv, f"http://127.0.0.1:{self.port}/_edge/ready", log, env)

    def get(self, path: str) -> Reply:
        return request(self.port, path, context=self.context)

    def body(self, path: str = "/hello") -> bytes | None:
        """The body of a 200 answer, else None."""
        reply = self.get(path)
        return reply.body if reply.status == 200 else None

    def serves(self, body: bytes, path: str = "/hello") -> bool:
        return self.body(path) == body

    def ready(self) -> dict[str, Any]:
        reply = self.get("/_edge/ready")
        assert reply.status == 200, reply
        result: dict[str, Any] = reply.json()
        return result

    @property
    def node_id(self) -> str:
        return (self.data / "node-id").read_text().strip()


class Fleet:
    """The processes of one test, all stopped (nodes first) by `close`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.nodes: list[Node] = []
        self.origin: Origin | None = None

    def start_origin(self) -> Origin:
        self.origin = Origin(self.root / "origin", self.root / "origin.log")
        self.origin.start()
        return self.origin

    def start_node(self, origin_key: str | None = None, token_via: str = "file") -> Node:
        """Start a node and wait until the origin lists it as live (it registered)."""
        origin = self.origin
        assert origin is not None
        index = len(self.nodes) + 1
        node = Node(
            origin,
            origin.node_token(),
            self.root / f"node{index}",
            self.root / f"node{index}.log",
            origin_key,
            token_via,
        )
        self.nodes.append(node)
        node.start()
        wait_for(lambda: node.node_id in origin.live_nodes(), 20, f"node {index} to register")
        return node

    def close(self) -> None:
        try:
            for node in self.nodes:
                node.stop()
        finally:
            if self.origin is not None:
                self.origin.stop()


class Hammer:
    """Client threads, each sending GETs over its own keep-alive connection until stopped."""

    def __init__(self, port: int, path: str, threads: int, limit: int, seconds: float) -> None:
        self.port = port
        self.path = path
        self.limit = limit  # requests per thread at most
        self.deadline = time.monotonic() + seconds
        self.stopping = threading.Event()
        # Per thread, in order: (status, body), or (0, "ExceptionName: text") for a failed request.
        self.results: list[list[tuple[int, bytes]]] = [[] for _ in range(threads)]
        self._threads = [
            threading.Thread(target=self._run, args=(self.results[i],), daemon=True) for i in range(threads)
        ]

    def __enter__(self) -> Hammer:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self.stopping.set()
        for thread in self._threads:
            thread.join(30)

    @property
    def count(self) -> int:
        return sum(len(results) for results in self.results)

    def _run(self, results: list[tuple[int, bytes]]) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            while (
                len(results) < self.limit and not self.stopping.is_set() and time.monotonic() < self.deadline
            ):
                try:
                    connection.request("GET", self.path)
                    response = connection.getresponse()
                    results.append((response.status, response.read()))
                except (OSError, http.client.HTTPException) as exc:
                    results.append((0, f"{type(exc).__name__}: {exc}".encode()))
                    connection.close()
                    connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        finally:
            connection.close()
