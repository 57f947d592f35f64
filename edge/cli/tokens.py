"""`edge origin token create | ls | revoke`: on the origin's data directory, or over its admin API.

With `--data DIR` a command works on that data directory (the origin may be running: it reads
tokens from the database on every request). Otherwise, when `--origin` or `$EDGE_ORIGIN` names an
origin, it uses the admin API with `--token` / `$EDGE_TOKEN` (what an operator on another machine
needs). With neither, it works on `.edge/origin`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import NoReturn

from edge.cli._abort import abort
from edge.cli._args import duration
from edge.cli._origin import origin_client, print_json
from edge.cli.deploy import table
from edge.control.admin import NewToken, TokenInfo
from edge.control.client import ControlError, OriginClient
from edge.origin import tokens
from edge.origin.datadir import ROLES, DataDir
from edge.origin.metadata import DatabaseError, MetadataStore, check_database
from edge.origin.service import ApiError

__all__ = ["register"]

DEFAULT_DATA = ".edge/origin"


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `token create`, `token ls` and `token revoke` under `edge origin`."""
    where = argparse.ArgumentParser(add_help=False)
    where.add_argument(
        "--data",
        dest="token_data",
        metavar="DIR",
        help=f"work on this data directory (default {DEFAULT_DATA})",
    )
    where.add_argument(
        "--database",
        dest="token_database",
        metavar="URL",
        help="with --data: the PostgreSQL database that origin was started with (--database)",
    )
    where.add_argument(
        "--origin",
        metavar="URL",
        help="use this origin's admin API instead; URL1,URL2 fails over; default $EDGE_ORIGIN",
    )
    where.add_argument("--token", help="admin token for --origin (default $EDGE_TOKEN)")
    where.add_argument(
        "--origin-ca", metavar="FILE", help="https origin: its certificate or CA (default $EDGE_ORIGIN_CA)"
    )
    where.add_argument("--json", action="store_true", help="print JSON for scripts")

    token = commands.add_parser("token", help="manage access tokens")
    token_commands = token.add_subparsers(dest="token_command", metavar="COMMAND", required=True)
    create = token_commands.add_parser(
        "create", parents=[where], help="print a new token (stored hashed; its id goes to stderr)"
    )
    create.add_argument("--role", choices=ROLES, required=True, help="admin: deploy API; node: sync API")
    create.add_argument(
        "--expires", type=duration, metavar="DURATION", help="lifetime: 90m, 12h, 30d (default: none)"
    )
    create.add_argument(
        "--node", metavar="NODE_ID", help="a node token only this node id (and its workers) may use"
    )
    create.set_defaults(func=_create)
    listing = token_commands.add_parser("ls", parents=[where], help="list tokens by id (never the tokens)")
    listing.set_defaults(func=_ls)
    revoke = token_commands.add_parser("revoke", parents=[where], help="revoke a token by its id")
    revoke.add_argument("id", help="the token's id, as `edge origin token ls` shows it")
    revoke.set_defaults(func=_revoke)


def _client(args: argparse.Namespace) -> OriginClient | None:
    """The admin API client, or None when the command works on a data directory."""
    url = args.origin or os.environ.get("EDGE_ORIGIN")
    if args.token_data is not None or args.data is not None or args.token_database or not url:
        return None
    return origin_client(args, url)


def _store(args: argparse.Namespace) -> MetadataStore:
    database = args.token_database or getattr(args, "database", "") or ""
    data = DataDir(Path(args.token_data or args.data or DEFAULT_DATA), database)
    if not database and not data.database.exists():
        abort(f"{data.root}: no origin data here; start `edge origin --data {data.root}` once first")
    try:
        check_database(database)
        return data.open_store()
    except DatabaseError as exc:
        abort(str(exc))


def _fail(exc: ApiError | ControlError) -> NoReturn:
    abort(exc.message if isinstance(exc, ApiError) else str(exc))


def _when(timestamp: float | None) -> str:
    return "-" if timestamp is None else datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _node(info: TokenInfo) -> str:
    if info.role != "node":
        return "-"
    if info.node_id is not None:
        return info.node_id
    return f"any ({', '.join(info.nodes)})" if info.nodes else "any"


def _create(args: argparse.Namespace) -> int:
    if args.node is not None and args.role != "node":
        abort(f"--node {args.node}: only a node token is bound to a node; drop --node or use --role node")
    client = _client(args)
    created: NewToken
    try:
        if client is not None:
            created = client.create_token(args.role, args.expires, args.node)
        else:
            store = _store(args)
            try:
                created = tokens.create(store, args.role, time.time(), args.expires, args.node)
            finally:
                store.close()
    except (ApiError, ControlError) as exc:
        _fail(exc)
    if args.json:
        print_json(created)
        return 0
    print(created.token)
    info = created.info
    node = ""
    if info.role == "node":
        node = ", any node id" if info.node_id is None else f", bound to node {info.node_id}"
    expiry = "no expiry" if info.expires_at is None else f"expires {_when(info.expires_at)} UTC"
    print(f"token {info.id}: role {info.role}{node}, {expiry}; shown only this once", file=sys.stderr)
    return 0


def _ls(args: argparse.Namespace) -> int:
    client = _client(args)
    try:
        if client is not None:
            found = client.tokens()
        else:
            store = _store(args)
            try:
                found = tokens.listing(store)
            finally:
                store.close()
    except (ApiError, ControlError) as exc:
        _fail(exc)
    if args.json:
        print_json(found)
        return 0
    now = time.time()
    rows = [
        [
            info.id,
            info.role,
            _node(info),
            _when(info.created_at),
            _when(info.expires_at)
            + (" (expired)" if info.expires_at is not None and info.expires_at <= now else ""),
            _when(info.last_used),
            _when(info.revoked_at),
        ]
        for info in found
    ]
    headers = ["ID", "ROLE", "NODE", "CREATED (UTC)", "EXPIRES (UTC)", "LAST USED (UTC)", "REVOKED (UTC)"]
    print(table(headers, rows))
    return 0


def _revoke(args: argparse.Namespace) -> int:
    client = _client(args)
    try:
        if client is not None:
            info = client.revoke_token(args.id)
        else:
            store = _store(args)
            try:
                info = tokens.revoke(store, args.id, time.time())
            finally:
                store.close()
    except (ApiError, ControlError) as exc:
        _fail(exc)
    if args.json:
        print_json(info)
    else:
        print(f"revoked token {info.id} ({info.role}); the origin refuses it from its next request")
    return 0
