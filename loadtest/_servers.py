"""Start and stop the servers a benchmark or test drives: real processes on free loopback ports."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import IO

__all__ = ["ROOT", "Server", "free_port", "wait_http"]

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_http(url: str, timeout: float, process: subprocess.Popen[bytes] | None = None) -> bytes:
    """Poll `url` until it answers 200 (the body is returned); raise TimeoutError or if the process died."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                body: bytes = response.read()
                return body
        except (OSError, urllib.error.URLError) as exc:
            last = exc
        time.sleep(0.05)
    raise TimeoutError(f"{url} did not answer within {timeout} s: {last}")


class Server:
    """A server subprocess: started, polled until ready, terminated then killed on stop()."""

    def __init__(
        self,
        argv: Sequence[str],
        ready_url: str,
        env: dict[str, str] | None = None,
        log_path: Path | None = None,
        cwd: Path = ROOT,
    ) -> None:
        self.argv = list(argv)
        self.ready_url = ready_url
        self.env = {**os.environ, **(env or {})}
        self.log_path = log_path
        self.cwd = cwd
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self, timeout: float = 30.0) -> Server:
        """Start the process and wait until `ready_url` answers."""
        self._log = open(self.log_path, "wb") if self.log_path else None  # noqa: SIM115 (closed in stop)
        self.process = subprocess.Popen(
            self.argv,
            cwd=self.cwd,
            env=self.env,
            stdout=self._log or subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_http(self.ready_url, timeout, self.process)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, wait, then SIGKILL; returns the exit code (None if it had to be killed)."""
        try:
            return self._stop(timeout)
        finally:
            if self._log is not None:
                self._log.close()
                self._log = None

    def _stop(self, timeout: float) -> int | None:
        process = self.process
        if process is None or process.poll() is not None:
            return process.returncode if process else None
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            return None

    @property
    def pid(self) -> int:
        """The server process's id (it must be started)."""
        if self.process is None:
            raise RuntimeError(f"{self.argv[0]} is not started")
        return self.process.pid

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def python() -> str:
    """The interpreter running this code (the project's virtualenv)."""
    return sys.executable
