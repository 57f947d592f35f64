"""`edge origin`: run the origin under granian (`edge origin token ...` is in tokens.py)."""

from __future__ import annotations

import argparse
import fcntl
import os
import socket
from pathlib import Path
from typing import IO

import msgspec

from edge.bundle import DEFAULT_LIMITS, Limits, ManifestBounds
from edge.cli import tokens
from edge.cli._abort import abort
from edge.cli._args import count, seconds
from edge.cli._tls import add_origin_tls_options, check_origin_tls_options, origin_tls
from edge.control.signing import SignatureError
from edge.origin.blobs import check_blobs_url, check_s3_credentials
from edge.origin.datadir import DataDir
from edge.origin.metadata import DatabaseError, check_database
from edge.origin.settings import SETTINGS_ENV, OriginSettings

__all__ = ["register"]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8700
DEFAULT_DATA = ".edge/origin"
_LOG_LEVELS = ("critical", "error", "warning", "info", "debug")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `origin` and `origin token create | ls | revoke`."""
    parser = subparsers.add_parser("origin", help="run the origin that stores versions and drives nodes")
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"address to listen on (default {DEFAULT_HOST})")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    parser.add_argument("--data", default=None, help=f"data directory (default {DEFAULT_DATA})")
    parser.add_argument(
        "--database",
        metavar="URL",
        default="",
        help="metadata in PostgreSQL, postgresql://[user@]host[:port]/dbname, shared by every origin"
        " given it (password: ~/.pgpass or PGPASSFILE; default: SQLite in the data directory)",
    )
    parser.add_argument(
        "--blobs",
        metavar="URL",
        default="",
        help="bundles in an S3-compatible bucket, s3://bucket[/prefix] (credentials: AWS_ACCESS_KEY_ID"
        " and AWS_SECRET_ACCESS_KEY; default: the data directory's blobs/)",
    )
    parser.add_argument(
        "--blobs-endpoint",
        metavar="URL",
        default="",
        help="the S3-compatible server's URL, for a bucket not on AWS (e.g. http://127.0.0.1:9000)",
    )
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
    bounds = ManifestBounds()
    parser.add_argument(
        "--max-manifest-bytes",
        type=count,
        default=bounds.max_manifest_bytes,
        help=f"largest edge.toml accepted (default {bounds.max_manifest_bytes})",
    )
    parser.add_argument(
        "--max-env-bytes",
        type=count,
        default=bounds.max_env_bytes,
        help=f"largest [env] accepted, names and values together (default {bounds.max_env_bytes})",
    )
    parser.add_argument(
        "--max-routes",
        type=count,
        default=bounds.max_routes,
        help=f"most routes one function may have (default {bounds.max_routes})",
    )
    parser.add_argument(
        "--jwks-refresh",
        type=_refresh_seconds,
        default=3600.0,
        help="seconds between fetches of every [auth] jwks_url in use; 0: only at deploy (default 3600)",
    )
    parser.add_argument("--log-level", choices=_LOG_LEVELS, default="warning", help="granian's log level")
    add_origin_tls_options(parser)
    parser.set_defaults(func=_serve)
    commands = parser.add_subparsers(dest="origin_command", metavar="COMMAND")
    tokens.register(commands)


def _refresh_seconds(value: str) -> float:
    """0 (never) or a number of seconds above zero."""
    return 0.0 if value.strip() in ("0", "0.0") else seconds(value)


def _serve(args: argparse.Namespace) -> int:
    from granian import Granian
    from granian.constants import Interfaces, Loops
    from granian.log import LogLevels

    try:
        database = check_database(args.database)
        if args.blobs:
            check_blobs_url(args.blobs)
            check_s3_credentials(args.blobs, os.environ)
    except ValueError as exc:
        abort(str(exc), 2)
    if args.blobs_endpoint and not args.blobs:
        abort(f"--blobs-endpoint {args.blobs_endpoint}: only an S3 bucket (--blobs s3://...) uses it", 2)
    if args.blobs_endpoint and not args.blobs_endpoint.startswith(("http://", "https://")):
        abort(f"--blobs-endpoint: Expected http://host:port or https://host, got {args.blobs_endpoint!r}", 2)
    data = DataDir(Path(args.data or DEFAULT_DATA).resolve(), database)
    settings = OriginSettings(
        data_dir=str(data.root),
        database=database,
        blobs=args.blobs,
        blobs_endpoint=args.blobs_endpoint,
        keep_versions=args.keep_versions,
        heartbeat_interval_s=args.heartbeat_interval,
        live_intervals=args.live_intervals,
        limits=Limits(max_bytes=args.max_bundle_bytes, max_unpacked_bytes=args.max_unpacked_bytes),
        bounds=ManifestBounds(
            max_manifest_bytes=args.max_manifest_bytes,
            max_env_bytes=args.max_env_bytes,
            max_routes=args.max_routes,
        ),
        jwks_refresh_s=args.jwks_refresh,
    )
    _check_port(args.host, args.port)
    check_origin_tls_options(args)
    try:
        data.root.mkdir(parents=True, exist_ok=True)
        lock = _lock(data)
        created = data.initialize()
    except DatabaseError as exc:
        abort(str(exc))
    except (OSError, SignatureError, ValueError) as exc:
        abort(f"{data.root}: cannot prepare the data directory: {exc}")
    if created:
        print(f"created the signing key and the first admin token; the token is in {data.admin_token}")
    tls = origin_tls(args, data.root)
    scheme = "https" if tls else "http"
    where = "".join(
        f", {what} in {place}" for what, place in (("metadata", database), ("blobs", args.blobs)) if place
    )
    print(f"origin on {scheme}://{args.host}:{args.port}, data in {data.root}{where}", flush=True)
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
