"""Real PostgreSQL and a real S3-compatible server for origins that share them (tests and benchmarks).

PostgreSQL is Debian's package (`apt-get install -y postgresql`, installed on first use when this is
root on Debian and `initdb` is missing: about a minute and 50 MB, once per machine). The tests run
their own cluster: `initdb` in a temp directory owned by the `postgres` user (initdb refuses root),
`postgres` on a free loopback port, trust authentication (no password anywhere), stopped with
SIGINT (a fast shutdown). The S3 server is moto's (`moto[server]` from PyPI, a test dependency):
pure Python, runs here without Docker, speaks the S3 REST API that obstore talks.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "INSTALL_TIMEOUT_S",
    "S3_ENV",
    "Postgres",
    "S3Server",
    "install_postgresql",
    "postgres",
    "s3_server",
]

INSTALL_TIMEOUT_S = 600
# The credentials moto accepts (any): set for the origins so obstore signs its requests.
S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _bindir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def install_postgresql() -> Path:
    """The directory holding `initdb` and `postgres`, installing Debian's postgresql when missing.

    Raises RuntimeError naming the command that failed and how to install it by hand."""
    bindir = _bindir()
    if bindir is not None:
        return bindir
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        raise RuntimeError(
            "no initdb found, and this is not root on a machine with apt-get: install PostgreSQL"
            " (Debian: `apt-get install -y postgresql`) and run these tests again"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (
        ["apt-get", "update"],
        ["apt-get", "install", "-y", "--no-install-recommends", "postgresql"],
    ):
        result = subprocess.run(
            command, capture_output=True, text=True, env=env, timeout=INSTALL_TIMEOUT_S, check=False
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"`{' '.join(command)}` failed with {result.returncode}:\n{result.stderr[-2000:]}\n"
                "install PostgreSQL by hand (`apt-get install -y postgresql`) and run these tests again"
            )
    bindir = _bindir()
    if bindir is None:
        raise RuntimeError("`apt-get install -y postgresql` succeeded but no initdb was found")
    return bindir


@dataclass
class Postgres:
    """A running cluster: `url(dbname)` for a database in it, `create()` for a new empty one."""

    port: int
    root: Path
    process: subprocess.Popen[bytes]

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://edge@127.0.0.1:{self.port}/{dbname}"

    def create(self) -> str:
        """A new empty database's URL."""
        import psycopg

        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def log(self) -> str:
        path = self.root / "postgres.log"
        return path.read_text(errors="replace") if path.exists() else ""


# Who runs initdb and postgres: the `postgres` user when this is root (both refuse root).
_USER = "postgres" if os.geteuid() == 0 else None


@contextlib.contextmanager
def postgres() -> Iterator[Postgres]:
    """Start a throwaway cluster on a free port; stopped and deleted on exit."""
    bindir = install_postgresql()
    root = Path(tempfile.mkdtemp(prefix="edge-pg-"))
    data = root / "data"
    if _USER is not None:
        shutil.chown(root, _USER, _USER)
    initdb = subprocess.run(
        [str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "edge", "-E", "UTF8"],
        user=_USER,
        group=_USER,
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if initdb.returncode != 0:
        raise RuntimeError(f"initdb failed with {initdb.returncode}:\n{initdb.stdout}\n{initdb.stderr}")
    port = _free_port()
    argv = [str(bindir / "postgres"), "-D", str(data), "-p", str(port), "-k", str(root)]
    argv += ["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "max_connections=200"]
    with (root / "postgres.log").open("wb") as out:
        process = subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=root,
            user=_USER,
            group=_USER,
        )
    running = Postgres(port, root, process)
    try:
        _wait_postgres(running)
        yield running
    finally:
        _stop(process, signal.SIGINT)
        shutil.rmtree(root, ignore_errors=True)


def _wait_postgres(running: Postgres) -> None:
    import psycopg

    deadline = time.monotonic() + 30
    while True:
        if running.process.poll() is not None:
            raise RuntimeError(f"postgres exited with {running.process.returncode}:\n{running.log()}")
        try:
            with psycopg.connect(running.url(), connect_timeout=2):
                return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"postgres did not accept connections:\n{running.log()}") from None
            time.sleep(0.05)


@dataclass
class S3Server:
    """moto's S3 server: `bucket()` makes a new empty bucket and returns its name."""

    endpoint: str
    process: subprocess.Popen[bytes]

    def bucket(self) -> str:
        name = f"edge-{uuid.uuid4().hex[:12]}"
        request = urllib.request.Request(f"{self.endpoint}/{name}", method="PUT")
        with urllib.request.urlopen(request, timeout=10):  # raises HTTPError for anything but 2xx
            return name


@contextlib.contextmanager
def s3_server(log: Path) -> Iterator[S3Server]:
    """Start moto's S3 server on a free loopback port; stopped on exit."""
    port = _free_port()
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = S3Server(f"http://127.0.0.1:{port}", process)
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"moto exited with {process.returncode}:\n{log.read_text()}")
            try:
                with urllib.request.urlopen(f"{server.endpoint}/moto-api/", timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"moto did not answer:\n{log.read_text()}") from None
                time.sleep(0.05)
        yield server
    finally:
        _stop(process, signal.SIGTERM)


def _stop(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    if process.poll() is not None:
        return
    process.send_signal(sig)
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)
