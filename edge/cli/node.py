"""`edge node`: run an edge node under granian."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import msgspec

from edge.cli._abort import abort
from edge.functions import scan_functions
from edge.settings import NodeSettings, SettingsError, load_settings

__all__ = ["register"]


def register(subparsers: Any) -> None:
    """Add `edge node`."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "node", help="run an edge node", description="Serve functions from persistent subinterpreters."
    )
    parser.add_argument("--functions", metavar="DIR", help="serve every function directory in DIR")
    parser.add_argument("--origin", metavar="URL", help="sync functions from this origin instead")
    parser.add_argument("--token", help="node token for the origin (or EDGE_TOKEN)")
    parser.add_argument("--data", metavar="DIR", help="origin mode: state directory (default .edge/node)")
    parser.add_argument("--origin-key", metavar="KEY", help="origin mode: the origin's public key to pin")
    parser.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port to listen on (default 8080)")
    parser.add_argument("--workers", type=int, help="granian worker processes (default 1)")
    parser.add_argument(
        "--config", metavar="FILE", type=Path, help="settings file (TOML), e.g. config/node.toml"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Load settings, print what to curl, then serve until SIGINT/SIGTERM."""
    config = args.config or (Path(os.environ["EDGE_CONFIG"]) if os.environ.get("EDGE_CONFIG") else None)
    flags = {
        "functions": args.functions,
        "host": args.host,
        "port": args.port,
        "workers": args.workers,
        "origin": args.origin,
        "token": args.token,
        "data": args.data,
        "origin_key": args.origin_key,
    }
    try:
        settings = load_settings(config, os.environ, flags)
    except SettingsError as exc:
        abort(str(exc), 2)
    if settings.origin:
        if not settings.token:
            abort("--origin needs a node token: pass --token T (or set EDGE_TOKEN)", 2)
        base = f"http://{settings.host}:{settings.port}"
        print(f"edge node: syncing from {settings.origin} on {base} (state in {settings.data})", flush=True)
        print(f"  curl {base}/_edge/ready", flush=True)
    else:
        if not settings.functions:
            abort("no functions to serve: pass --functions DIR or --origin URL", 2)
        root = Path(settings.functions)
        if not root.is_dir():
            abort(f"--functions {settings.functions}: not a directory", 2)
        _print_banner(settings, root)
    serve(settings)
    return 0


def _print_banner(settings: NodeSettings, root: Path) -> None:
    base = f"http://{settings.host}:{settings.port}"
    found = scan_functions(root)
    print(f"edge node: {len(found)} function(s) from {root} on {base}", flush=True)
    for function in found:
        note = "" if function.manifest else f"   (will answer 503: {function.error})"
        print(f"  curl {base}/{function.name}{note}", flush=True)
    print(f"  curl {base}/_edge/ready", flush=True)


def serve(settings: NodeSettings) -> None:
    """Run granian in this process until it is told to stop (workers are forked processes)."""
    from granian import Granian
    from granian.constants import HTTPModes, Interfaces, Loops

    from edge.app import SETTINGS_VARIABLE

    os.environ[SETTINGS_VARIABLE] = msgspec.json.encode(settings).decode()
    server = Granian(
        "edge.app:create_app",
        factory=True,
        address=settings.host,
        port=settings.port,
        interface=Interfaces.ASGI,
        workers=settings.workers,
        loop=Loops.uvloop,
        http=HTTPModes(settings.http),
        log_level=settings.log_level,  # type: ignore[arg-type]
        log_access=False,
        # A worker that misses its SIGTERM (sent while it was still starting) is killed, not awaited forever.
        workers_kill_timeout=settings.shutdown_timeout_ms // 1000 + 5,
    )
    server.serve()
