"""`edge invoke`: call a function through a node and print what it answered."""

from __future__ import annotations

import argparse
import http.client
import json
import os
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from edge.cli._abort import abort
from edge.cli._args import seconds

__all__ = ["DEFAULT_NODE", "register"]

# Where `edge up`, `make run` and `edge node` listen unless told otherwise.
DEFAULT_NODE = "http://127.0.0.1:8080"
_FIX = "start one (`edge up`, `make run` or `edge node --functions DIR`) or set EDGE_NODE or --node"


def register(subparsers: Any) -> None:
    """Add `edge invoke`."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "invoke",
        help="call a function through a node",
        description=(
            "Send one request to /NAME[PATH] on a node and print the body (status and headers with -v"
            ' on stderr); with --lambda, call a kind = "lambda" function through the Lambda invoke'
            " API with --data as the event. Exit 0 on a 2xx answer, 1 otherwise."
        ),
    )
    parser.add_argument("name", metavar="NAME", help="the function")
    parser.add_argument(
        "--data",
        "-d",
        metavar="DATA",
        help="the request body: text, @FILE for a file's bytes, or @- for stdin (default: no body)",
    )
    parser.add_argument(
        "--method", "-X", metavar="M", help="HTTP method (default POST with --data, else GET)"
    )
    parser.add_argument("--path", default="", metavar="P", help="appended to /NAME, e.g. /items?id=1")
    parser.add_argument(
        "--header", "-H", action="append", default=[], metavar="K:V", help="a request header (repeatable)"
    )
    parser.add_argument(
        "--lambda",
        dest="invoke_api",
        action="store_true",
        help="POST --data (JSON, default {}) as the event to /2015-03-31/functions/NAME/invocations",
    )
    parser.add_argument("--node", metavar="URL", help=f"the node (default $EDGE_NODE, else {DEFAULT_NODE})")
    parser.add_argument("--timeout", type=seconds, default=60.0, help="seconds to wait (default 60)")
    parser.add_argument("-v", "--verbose", action="store_true", help="print the status and headers on stderr")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Send the request; the exit code says whether the answer was 2xx."""
    node = args.node or os.environ.get("EDGE_NODE") or DEFAULT_NODE
    place = "--node" if args.node else "EDGE_NODE" if os.environ.get("EDGE_NODE") else "the default"
    parts = urlsplit(node)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        abort(f"{place}: Expected a node URL like {DEFAULT_NODE}, got {node!r}")
    body = _body(args.data)
    headers = [_header(text) for text in args.header]
    if args.invoke_api:
        if args.method or args.path:
            abort("--lambda calls the invoke API (POST, no path): leave out --method and --path")
        event = body or b"{}"
        try:
            json.loads(event)
        except ValueError as exc:
            shown = event[:60].decode(errors="replace")
            abort(f"--data: Expected a JSON event for --lambda, got {shown!r} ({exc})")
        method, path, body = "POST", f"/2015-03-31/functions/{quote(args.name)}/invocations", event
        if not any(name.lower() == "content-type" for name, _ in headers):
            headers.append(("Content-Type", "application/json"))
    else:
        method = args.method or ("POST" if args.data is not None else "GET")
        path = f"/{quote(args.name)}{args.path}"
        if args.path and not args.path.startswith(("/", "?")):
            abort(f"--path: Expected a path starting with '/' or '?', got {args.path!r}")
    url = f"{node.rstrip('/')}{path}"
    status, reason, reply_headers, reply = _send(parts, method, path, headers, body, args.timeout, url)
    if args.verbose:
        print(f"{status} {reason}", file=sys.stderr)
        for name, value in reply_headers:
            print(f"{name}: {value}", file=sys.stderr)
    sys.stdout.buffer.write(reply)
    sys.stdout.flush()
    return 0 if 200 <= status < 300 else 1


def _body(data: str | None) -> bytes:
    if data is None:
        return b""
    if data == "@-":
        return sys.stdin.buffer.read()
    if data.startswith("@"):
        try:
            return Path(data[1:]).read_bytes()
        except OSError as exc:
            abort(f"--data {data}: cannot read {data[1:]}: {exc.strerror or exc}")
    return data.encode()


def _header(text: str) -> tuple[str, str]:
    name, colon, value = text.partition(":")
    if not colon or not name.strip():
        abort(f"--header: Expected `Name: value`, got {text!r}")
    return name.strip(), value.strip()


def _send(
    parts: Any, method: str, path: str, headers: list[tuple[str, str]], body: bytes, timeout: float, url: str
) -> tuple[int, str, list[tuple[str, str]], bytes]:
    kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    connection = kind(parts.hostname, parts.port, timeout=timeout)
    base = parts.path.rstrip("/")
    try:
        connection.putrequest(method, f"{base}{path}")
        for name, value in headers:
            connection.putheader(name, value)
        if body or method in ("POST", "PUT", "PATCH"):
            connection.putheader("Content-Length", str(len(body)))
        connection.endheaders(body or None)
        response = connection.getresponse()
        return response.status, response.reason, response.getheaders(), response.read()
    except TimeoutError:
        abort(f"{method} {url}: no answer within {timeout:g} s (raise --timeout)")
    except (OSError, http.client.HTTPException) as exc:
        abort(f"cannot reach the node at {url}: {exc}; {_FIX}")
    finally:
        connection.close()
