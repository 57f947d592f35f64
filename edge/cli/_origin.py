"""The options every command that talks to the origin's admin API takes, and its client."""

from __future__ import annotations

import argparse
import os

import msgspec

from edge.cli._abort import abort
from edge.control import failover
from edge.control.client import OriginClient

__all__ = ["CONNECT_TIMEOUT_S", "DEFAULT_ORIGIN", "add_origin_options", "origin_client", "print_json"]

DEFAULT_ORIGIN = "http://127.0.0.1:8700"
# Connecting to one origin (and the TLS handshake) gives up after this long, so a command given
# several origins moves on from one that is down, or cut off, within seconds.
CONNECT_TIMEOUT_S = 5.0


def add_origin_options(parser: argparse.ArgumentParser) -> None:
    """--origin, --token and --origin-ca (each defaulting to its EDGE_* variable)."""
    parser.add_argument(
        "--origin",
        help=(
            f"origin URL, or several separated by commas, tried in turn while one cannot be"
            f" reached (default $EDGE_ORIGIN or {DEFAULT_ORIGIN})"
        ),
    )
    parser.add_argument("--token", help="admin token (default $EDGE_TOKEN)")
    parser.add_argument(
        "--origin-ca",
        metavar="FILE",
        help="https origin: its certificate or CA, PEM (default $EDGE_ORIGIN_CA)",
    )


def origin_client(args: argparse.Namespace, url: str | None = None) -> OriginClient:
    """The admin API client the options (or the environment) name: for `URL1,URL2`, one that
    fails over between them (edge/control/failover.py, never sending a change twice); aborts on a
    bad URL."""
    url = url or args.origin or os.environ.get("EDGE_ORIGIN") or DEFAULT_ORIGIN
    token = args.token or os.environ.get("EDGE_TOKEN") or None
    ca_file = args.origin_ca or os.environ.get("EDGE_ORIGIN_CA") or None
    try:
        return failover.origin_client(
            url, token, ca_file=ca_file, connect_timeout=CONNECT_TIMEOUT_S, resend=False
        )
    except ValueError as exc:
        abort(str(exc))


def print_json(value: object) -> None:
    """An admin API answer as indented JSON on stdout (`--json`, for scripts)."""
    print(msgspec.json.format(msgspec.json.encode(value), indent=2).decode())
