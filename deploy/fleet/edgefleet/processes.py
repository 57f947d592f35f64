"""The fleet's processes: the origin and the nodes, each `python -m edge ...` inside its namespace."""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from edgefleet.namespaces import nsenter, socket_in

__all__ = ["NsConnection", "Server", "tree_usage"]

REPO = Path(__file__).resolve().parents[3]


class NsConnection(http.client.HTTPConnection):
    """HTTP to 127.0.0.1:`port` inside a namespace: traffic that never crosses the faulty link."""

    def __init__(self, namespace: str, port: int, timeout: float = 5.0) -> None:
        super().__init__("127.0.0.1", port, timeout=timeout)
        self.namespace = namespace

    def connect(self) -> None:
        sock = socket_in(self.namespace)
        sock.settimeout(self.timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            sock.connect((self.host, self.port))
        except OSError:
            sock.close()
            raise
        self.sock = sock


def get(connection: NsConnection, path: str) -> tuple[int, bytes]:
    """One GET on a kept-alive connection (reopened after a failure, which is raised)."""
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    except (OSError, http.client.HTTPException):
        connection.close()
        raise


class Server:
    """One `edge` server in a namespace, its output in `log`; restartable."""

    def __init__(self, namespace: str, args: list[str], log: Path, env: dict[str, str], port: int) -> None:
        self.namespace = namespace
        self.argv = [*nsenter(namespace), sys.executable, "-m", "edge", *args]
        self.log = log
        self.env = env
        self.port = port
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                self.argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=REPO,
                env=self.env,
                start_new_session=True,
            )

    def wait_ready(self, path: str, timeout: float) -> None:
        """Poll `path` inside the namespace until it answers 200; raise with the log's end if not."""
        deadline = time.monotonic() + timeout
        connection = NsConnection(self.namespace, self.port, timeout=2)
        try:
            while True:
                if self.process is not None and self.process.poll() is not None:
                    raise RuntimeError(
                        f"{self.argv[3:6]} exited with {self.process.returncode}:\n{self.tail()}"
                    )
                with contextlib.suppress(OSError, http.client.HTTPException):
                    if get(connection, path)[0] == 200:
                        return
                if time.monotonic() >= deadline:
                    raise RuntimeError(
                        f"{' '.join(self.argv[-8:])}: not ready in {timeout} s:\n{self.tail()}"
                    )
                time.sleep(0.05)
        finally:
            connection.close()

    @property
    def pid(self) -> int:
        return self.process.pid if self.process is not None else 0

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the process group, then SIGKILL it."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)

    def tail(self, size: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-size:] if self.log.exists() else ""


_TICK = os.sysconf("SC_CLK_TCK")


def tree_usage(groups: list[int]) -> dict[int, tuple[float, int]]:
    """Per process group: (CPU seconds, user + system, and RSS bytes) of its live processes."""
    usage = dict.fromkeys(groups, (0.0, 0))
    page = os.sysconf("SC_PAGE_SIZE")
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # Fields after the name: state(0) ppid(1) pgrp(2) ... utime(11) stime(12) ... rss(21).
        group = int(fields[2])
        if group in usage:
            cpu, rss = usage[group]
            usage[group] = (cpu + (int(fields[11]) + int(fields[12])) / _TICK, rss + int(fields[21]) * page)
    return usage
