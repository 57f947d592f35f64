"""`edge up`: an origin and a node on loopback, the examples deployed through the real API."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import FrameType
from typing import Any

from edge.bundle import BundleError, build
from edge.cli._abort import abort
from edge.cli._self import edge_argv
from edge.control.client import ControlError, OriginClient
from edge.node.functions import scan_functions

__all__ = ["check_free", "edge_command", "register"]


def register(subparsers: Any) -> None:
    """Add `edge up`."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "up",
        help="run an origin and a node on loopback with the examples deployed",
        description="Start an origin and a node, deploy every function in --functions, print what to curl.",
    )
    parser.add_argument(
        "--functions", default="examples", metavar="DIR", help="deploy these (default examples)"
    )
    parser.add_argument("--port", type=int, default=8080, help="the node's port (default 8080)")
    parser.add_argument("--origin-port", type=int, default=8700, help="the origin's port (default 8700)")
    parser.add_argument(
        "--data", default=".edge/up", metavar="DIR", help="state directory (default .edge/up)"
    )
    parser.set_defaults(func=run)


def _start(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        # A new session: Ctrl-C in the terminal reaches `edge up`, which stops the children in order.
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


# Lines of a server's log shown when it failed to start.
TAIL_LINES = 20
# Seconds each server has to answer once started.
READY_TIMEOUT_S = 30.0


def edge_command() -> str:
    """How to run this `edge` from the user's shell: `edge` when PATH finds it, else its absolute path."""
    script = Path(sys.prefix) / "bin" / "edge"
    found = shutil.which("edge")
    if found is not None and script.is_file() and Path(found).resolve() == script.resolve():
        return "edge"
    if script.is_file() and os.access(script, os.X_OK):
        return str(script)
    return " ".join(edge_argv())


def _activate_hint() -> str:
    """` (or `. .venv/bin/activate` puts `edge` on PATH)` when running from a virtualenv."""
    if sys.prefix == sys.base_prefix:
        return ""
    activate = Path(sys.prefix) / "bin" / "activate"
    with contextlib.suppress(ValueError):
        activate = activate.relative_to(Path.cwd())
    return f" (or `. {activate}` puts `edge` on PATH)"


def check_free(host: str, port: int, flag: str) -> None:
    """Abort when something listens on host:port already (a server there would answer for ours)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            abort(
                f"{flag} {port}: cannot listen on {host}:{port}: {exc.strerror or exc}"
                f" (another `edge up`, origin or node?); stop it or pass another {flag}"
            )


def _tail(log: Path) -> str:
    try:
        lines = log.read_text(errors="replace").splitlines()[-TAIL_LINES:]
    except OSError as exc:
        return f"  (cannot read {log}: {exc.strerror or exc})"
    return "\n".join(f"  {line}" for line in lines) or "  (empty)"


def _failed(what: str, log: Path) -> str:
    return f"{what}; the end of {log}:\n{_tail(log)}"


def _exited(process: subprocess.Popen[bytes], log: Path) -> str:
    command = " ".join(str(arg) for arg in list(process.args)[2:4])  # type: ignore[arg-type]
    return _failed(f"`{command}` exited with {process.returncode}", log)


def _wait_ready(
    url: str, process: subprocess.Popen[bytes], log: Path, timeout: float = READY_TIMEOUT_S
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            abort(_exited(process, log))
        with (
            contextlib.suppress(OSError, urllib.error.URLError, ValueError),
            urllib.request.urlopen(url, timeout=2) as response,
        ):
            body: dict[str, Any] = json.loads(response.read())
            return body
        time.sleep(0.1)
    abort(_failed(f"{url} did not answer within {timeout:g} s", log))


def _stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        if process.poll() is None:
            process.terminate()
    for process in processes:
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def run(args: argparse.Namespace) -> int:
    """Start both servers, deploy, print, then wait for Ctrl-C (or a child's exit)."""
    root = Path(args.functions)
    if not root.is_dir():
        abort(f"--functions {args.functions}: not a directory", 2)
    data = Path(args.data)
    (data / "origin").mkdir(parents=True, exist_ok=True)
    origin_url = f"http://127.0.0.1:{args.origin_port}"
    node_url = f"http://127.0.0.1:{args.port}"
    edge = edge_argv()
    processes: list[subprocess.Popen[bytes]] = []
    check_free("127.0.0.1", args.origin_port, "--origin-port")
    check_free("127.0.0.1", args.port, "--port")

    def stop(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        origin = _start(
            [*edge, "origin", "--port", str(args.origin_port), "--data", str(data / "origin")],
            data / "origin.log",
        )
        processes.append(origin)
        _wait_ready(f"{origin_url}/v1/health", origin, data / "origin.log")
        token_file = data / "node-token"
        if not token_file.exists():
            token = subprocess.run(
                [*edge, "origin", "token", "create", "--role", "node", "--data", str(data / "origin")],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
            # Created 0600, never readable by others even for a moment.
            with open(os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as out:
                out.write(token + "\n")
        # A file, not --token: the command line of every process is public (ps, /proc/PID/cmdline).
        node_argv = [*edge, "node", "--origin", origin_url, "--token-file", str(token_file)]
        node_argv += ["--data", str(data / "node"), "--port", str(args.port)]
        node = _start(node_argv, data / "node.log")
        processes.append(node)
        _wait_ready(f"{node_url}/_edge/ready", node, data / "node.log")
        admin = OriginClient(origin_url, (data / "origin" / "admin-token").read_text().strip())
        names = _deploy_all(admin, root)
        _wait_serving(node_url, names, node, data / "node.log")
        # Both answer, and both are ours: neither exited meanwhile (e.g. losing a race for its port).
        _wait_ready(f"{origin_url}/v1/health", origin, data / "origin.log")
        _wait_ready(f"{node_url}/_edge/ready", node, data / "node.log")
        token_path = data / "origin" / "admin-token"
        command = edge_command()
        print(f"edge up: origin {origin_url} (admin token in {token_path})")
        print(f"         node   {node_url} (logs in {data}/)")
        for name in names:
            print(f"  curl {node_url}/{name}")
        print(f"  curl {node_url}/_edge/ready")
        print(f"the edge command: {command}{_activate_hint() if command != 'edge' else ''}")
        print(f"deploy more: EDGE_ORIGIN={origin_url} EDGE_TOKEN=$(cat {token_path}) {command} deploy DIR")
        print("Ctrl-C stops both.", flush=True)
        while all(process.poll() is None for process in processes):
            time.sleep(0.2)
        failed = next(p for p in processes if p.poll() is not None)
        abort(_exited(failed, data / ("origin.log" if failed is origin else "node.log")))
    except KeyboardInterrupt:
        print("\nstopping the node and the origin", flush=True)
        return 0
    finally:
        # Stopping has begun: a second Ctrl-C must not leave the children running.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        _stop(processes[::-1])


def _deploy_all(admin: OriginClient, root: Path) -> list[str]:
    names = []
    for found in scan_functions(root):
        if found.manifest is None:
            print(f"skipped {found.directory}: {found.error}", file=sys.stderr)
            continue
        try:
            data = build(found.directory)
        except BundleError as exc:
            # e.g. pip cannot install its requirements here: the other examples still run.
            print(f"skipped {found.directory}: {exc}", file=sys.stderr, flush=True)
            continue
        try:
            result = admin.deploy(found.name, data)
        except (BundleError, ControlError) as exc:
            abort(f"deploying {found.directory}: {exc}")
        print(f"deployed {result.name} {result.version[:12]} (revision {result.revision})", flush=True)
        names.append(found.name)
    return names


def _wait_serving(node_url: str, names: list[str], node: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        functions = _wait_ready(f"{node_url}/_edge/ready", node, log).get("functions", {})
        if all(functions.get(name, {}).get("state") == "serving" for name in names):
            return
        time.sleep(0.1)
    abort(_failed(f"the node did not serve {', '.join(names)} within 30 s", log))
