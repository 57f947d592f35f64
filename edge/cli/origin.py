"""`edge origin`: run the origin under granian; `edge origin token create`: mint a token."""

from __future__ import annotations

import argparse
import fcntl
import os
import socket
import time
from pathlib import Path
from typing import IO

import msgspec

from edge.bundle import DEFAULT_LIMITS, Limits
from edge.cli._abort import abort
from edge.cli._args import count, seconds
from edge.cli._tls import add_origin_tls_options, check_origin_tls_options, origin_tls
from edge.control.signing import SignatureError
from edge.origin.datadir import ROLES, DataDir, Role, new_token
from edge.origin.settings import SETTINGS_ENV, OriginSettings

__all__ = ["register"]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8700
DEFAULT_DATA = ".edge/origin"
_LOG_LEVELS = ("critical", "error", "warning", "info", "debug")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `origin` and `origin token create`."""
    parser = subparsers.add_parser("origin", help="run the origin that stores versions and drives nodes")
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"address to listen on (default {DEFAULT_HOST})")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    parser.add_argument("--data", default=DEFAULT_DATA, help=f"data directory (default {DEFAULT_DATA})")
    parser.add_argument(
        "--keep-versions", type=count, default=10, help="versions kept per function (default 10)"
    )
    parser.add_argument(
        "--heartbeat-interval", type=seconds, default=10.0, help="seconds between node reports (default 10)"
    )
    parser.add_argument(
        "--live-intervals",
        type=seconds,
        default=3.0,
        help="a node is live when seen within this many heartbeat intervals (default 3)",
    )
    parser.add_argument(
        "--max-bundle-bytes",
        type=count,
        default=DEFAULT_LIMITS.max_bytes,
        help=f"largest bundle accepted, compressed (default {DEFAULT_LIMITS.max_bytes})",
    )
    parser.add_argument(
        "--max-unpacked-bytes",
        type=count,
        default=DEFAULT_LIMITS.max_unpacked_bytes,
        help=f"largest bundle accepted, unpacked (default {DEFAULT_LIMITS.max_unpacked_bytes})",
    )
    parser.add_argument("--log-level", choices=_LOG_LEVELS, default="warning", help="granian's log level")
    add_origin_tls_options(parser)
    parser.set_defaults(func=_serve)
    commands = parser.add_subparsers(dest="origin_command", metavar="COMMAND")
    token = commands.add_parser("token", help="manage access tokens")
    token_commands = token.add_subparsers(dest="token_command", metavar="COMMAND", required=True)
    create = token_commands.add_parser("create", help="print a new token (stored hashed)")
    create.add_argument("--role", choices=ROLES, required=True, help="admin: deploy API; node: sync API")
    create.add_argument(
        "--data", dest="token_data", default=None, help=f"data directory (default {DEFAULT_DATA})"
    )
    create.set_defaults(func=_token_create)


def _serve(args: argparse.Namespace) -> int:
    from granian import Granian
    from granian.constants import Interfaces, Loops
    from granian.log import LogLevels

    data = DataDir(Path(args.data).resolve())
    settings = OriginSettings(
        data_dir=str(data.root),
        keep_versions=args.keep_versions,
        heartbeat_interval_s=args.heartbeat_interval,
        live_intervals=args.live_intervals,
        limits=Limits(max_bytes=args.max_bundle_bytes, max_unpacked_bytes=args.max_unpacked_bytes),
    )
    _check_port(args.host, args.port)
    check_origin_tls_options(args)
    try:
        data.root.mkdir(parents=True, exist_ok=True)
        lock = _lock(data)
        created = data.initialize()
    except (OSError, SignatureError) as exc:
        abort(f"{data.root}: cannot prepare the data directory: {exc}")
    if created:
        print(f"created the signing key and the first admin token; the token is in {data.admin_token}")
    tls = origin_tls(args, data.root)
    scheme = "https" if tls else "http"
    print(f"origin on {scheme}://{args.host}:{args.port}, data in {data.root}", flush=True)
    os.environ[SETTINGS_ENV] = msgspec.json.encode(settings).decode()
    Granian(
        "edge.origin.app:create_app",
        factory=True,
        address=args.host,
        port=args.port,
        interface=Interfaces.ASGI,
        workers=1,
        loop=Loops.uvloop,
        log_level=LogLevels(args.log_level),
        workers_kill_timeout=5,
        ssl_cert=tls[0] if tls else None,
        ssl_key=tls[1] if tls else None,
    ).serve()
    lock.close()
    return 0


def _lock(data: DataDir) -> IO[bytes]:
    """Hold `DATA/origin.lock` for the life of the process: one origin per data directory."""
    handle = (data.root / "origin.lock").open("wb")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        abort(f"{data.root}: another origin is already running on this data directory")
    return handle


def _check_port(host: str, port: int) -> None:
    """Fail clearly when the address is taken (granian would share it through SO_REUSEPORT)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        abort(f"cannot listen on {host}:{port}: {exc.strerror or exc}")
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            abort(f"cannot listen on {host}:{port}: {exc.strerror or exc}")


def _token_create(args: argparse.Namespace) -> int:
    data = DataDir(Path(args.token_data or args.data or DEFAULT_DATA))
    if not data.database.exists():
        abort(f"{data.root}: no origin data here; start `edge origin --data {data.root}` once first")
    role: Role = args.role
    store = data.open_store()
    try:
        token = new_token(store, role, time.time())
    finally:
        store.close()
    print(token)
    return 0
