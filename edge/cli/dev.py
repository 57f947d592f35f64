"""`edge dev DIR...`: a local node for function directories that reloads a function when its files change.

No origin: one granian worker runs the node's app with a watching LocalSource (edge/node/local.py),
which installs each function's requirements.txt into its `.deps/` and swaps in a function's new
version within a poll of its change. Every request is printed as it is served (from the node's
`edge.access` log line), and so is every line a function logs.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import msgspec

from edge.cli._abort import abort
from edge.cli.up import check_free
from edge.node.settings import NodeSettings

__all__ = ["create_app", "register"]

# Hands the settings and the directories from `edge dev` to its granian worker (no secrets in them).
CONFIG_VARIABLE = "EDGE_DEV_CONFIG_JSON"


class DevConfig(msgspec.Struct, frozen=True):
    """What the worker needs: the node's settings and the roots to watch."""

    settings: NodeSettings
    roots: list[str]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `edge dev`."""
    parser = subparsers.add_parser(
        "dev",
        help="serve function directories locally, reloading each on change",
        description=(
            "Serve one or more function directories (each with an edge.toml, or a directory of them)"
            " without an origin: requirements.txt is installed into .deps/, a function reloads within"
            " a second of a change to its files, and every request is printed."
        ),
    )
    parser.add_argument("directories", nargs="+", type=Path, metavar="DIR", help="a function directory")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="port to listen on (default 8080)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Check the directories, print what to curl, then serve until Ctrl-C."""
    from edge.node.local import function_dirs, read_function

    roots: list[Path] = args.directories
    for root in roots:
        if not root.is_dir():
            abort(
                f"{root}: not a directory; `edge dev` takes function directories (`edge init NAME` makes one)"
            )
    found = function_dirs(roots)
    if not found:
        shown = " ".join(map(str, roots))
        abort(f"{shown}: no edge.toml here or in a subdirectory; `edge init NAME` makes a function directory")
    functions = [read_function(directory) for directory in found]
    names: dict[str, Path] = {}
    for function in functions:
        if function.name in names:
            abort(
                f"{function.directory}: function name {function.name!r}"
                f" is already used by {names[function.name]}"
            )
        names[function.name] = function.directory
    check_free(args.host, args.port, "--port")
    settings = NodeSettings(host=args.host, port=args.port, workers=1)
    base = f"http://{args.host}:{args.port}"
    print(f"edge dev: {len(found)} function(s) on {base}; reloading on change, Ctrl-C stops", flush=True)
    for function in functions:
        note = f"   (will answer 503: {function.error})" if function.manifest is None else ""
        print(f"  curl {base}/{function.name}{note}", flush=True)
    config = DevConfig(settings, [str(root.resolve()) for root in roots])
    os.environ[CONFIG_VARIABLE] = msgspec.json.encode(config).decode()
    _serve(settings)
    return 0


def _serve(settings: NodeSettings) -> None:
    from granian import Granian
    from granian.constants import Interfaces, Loops
    from granian.log import LogLevels

    Granian(
        "edge.cli.dev:create_app",
        factory=True,
        address=settings.host,
        port=settings.port,
        interface=Interfaces.ASGI,
        workers=1,
        loop=Loops.uvloop,
        log_level=LogLevels.warning,
        log_access=False,
    ).serve()


class _DevFormatter(logging.Formatter):
    """One short line per record: a request as `GET /path 200 1.2 ms`, others as `name: message`."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.name == "edge.access":  # a batch: one JSON line per request
            return "\n".join(_request_line(line) for line in message.splitlines())
        text = f"{record.levelname.lower()}: {message}" if record.levelno >= logging.WARNING else message
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def _request_line(message: str) -> str:
    """The compact form of an `edge.access` JSON line (the raw line when it is not one)."""
    try:
        entry: Any = json.loads(message)
    except ValueError:
        return message
    if not isinstance(entry, dict):
        return message
    duration = entry.get("duration_ms")
    took = f"{duration:.1f} ms" if isinstance(duration, int | float) else "- ms"
    notes = [f"{entry.get('function') or '-'} {str(entry.get('version') or '-')[:12]}"]
    if entry.get("cold"):
        notes.append("cold")
    if entry.get("cache") not in (None, "", "-"):
        notes.append(f"cache {entry['cache']}")
    request = f"{entry.get('method', '-')} {entry.get('path', '-')} {entry.get('status', '-')}"
    return f"{request} {took}  ({', '.join(notes)})"


def _configure_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(_DevFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # The node's access log writes bare JSON to stderr unless its logger has a handler already.
    access = logging.getLogger("edge.access")
    access.handlers[:] = [handler]
    access.propagate = False
    access.setLevel(logging.INFO)


def create_app() -> Any:
    """Granian's factory for `edge dev`'s worker: the node's app with a watching local source."""
    from edge.node.app import NodeApp
    from edge.node.local import LocalSource

    raw = os.environ.pop(CONFIG_VARIABLE, None)
    if raw is None:
        raise RuntimeError(f"{CONFIG_VARIABLE} is not set: run `edge dev DIR`, which sets it")
    config = msgspec.json.decode(raw, type=DevConfig)
    _configure_logging(config.settings.log_level)
    return NodeApp(config.settings, LocalSource(config.roots, watch=True))
