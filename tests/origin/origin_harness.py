"""Run the real origin and the `edge` CLI as subprocesses; build bundles for tests."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import socket
import subprocess
import sys
import tarfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from edge.control.client import OriginClient

REPO = Path(__file__).resolve().parents[2]

# Only this part's command groups: the test must not depend on other groups being importable
# while they are being written. `test_origin_cli.py` checks that `_GROUPS` lists both.
LAUNCH = (
    "import sys, edge.cli as cli; cli._GROUPS = ('edge.cli.origin', 'edge.cli.deploy'); sys.exit(cli.main())"
)


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def edge_command(*args: str) -> list[str]:
    """The argv that runs `edge ARGS...`."""
    return [sys.executable, "-c", LAUNCH, *args]


def run_edge(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run `edge ARGS...` to completion, capturing text output."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_")}
    full_env.update(env or {})
    return subprocess.run(
        edge_command(*args),
        capture_output=True,
        text=True,
        env=full_env,
        cwd=REPO,
        timeout=timeout,
        check=False,
    )


@dataclass
class Origin:
    """A running origin process."""

    url: str
    port: int
    data: Path
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def admin_token(self) -> str:
        return (self.data / "admin-token").read_text().strip()

    def client(self, token: str | None = None, timeout: float = 10.0) -> OriginClient:
        return OriginClient(self.url, token, timeout)

    def admin(self) -> OriginClient:
        return self.client(self.admin_token)

    def env(self) -> dict[str, str]:
        return {"EDGE_ORIGIN": self.url, "EDGE_TOKEN": self.admin_token}

    def output(self) -> str:
        return self.log.read_text()

    def token(self, role: str) -> str:
        result = run_edge("origin", "token", "create", "--role", role, "--data", str(self.data))
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()


@contextlib.contextmanager
def running_origin(data: Path, *args: str) -> Iterator[Origin]:
    """Start `edge origin` on a free port, wait for /v1/health, terminate (then kill) on exit."""
    port = free_port()
    log = data.with_name(data.name + ".log")
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_")}
    with log.open("wb") as out:
        process = subprocess.Popen(
            edge_command("origin", "--port", str(port), "--data", str(data), *args),
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            env=env,
            start_new_session=True,
        )
    origin = Origin(f"http://127.0.0.1:{port}", port, data, process, log)
    try:
        deadline = time.monotonic() + 20
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"origin exited with {process.returncode}:\n{origin.output()}")
            try:
                with urllib.request.urlopen(f"{origin.url}/v1/health", timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"origin did not become ready:\n{origin.output()}") from None
                time.sleep(0.05)
        yield origin
    finally:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)


def write_function(
    directory: Path, main: str = "async def handler(request):\n    return 'hi'\n", manifest: str | None = None
) -> Path:
    """A function directory with `edge.toml` and `main.py`."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "edge.toml").write_text(manifest if manifest is not None else f'name = "{directory.name}"\n')
    (directory / "main.py").write_text(main)
    return directory


def tar_gz(*members: tuple[tarfile.TarInfo, bytes | None]) -> bytes:
    """A tar.gz with exactly these members (for bundles `pack` would never produce)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return raw.getvalue()


def file_member(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    """A regular-file member."""
    return tarfile.TarInfo(name), data


def good_members(name: str = "hello") -> list[tuple[tarfile.TarInfo, bytes | None]]:
    """The members of a minimal valid bundle."""
    return [
        file_member("edge.toml", f'name = "{name}"\n'.encode()),
        file_member("main.py", b"async def handler(request):\n    return 'hi'\n"),
    ]
