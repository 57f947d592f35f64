"""`edge secret set|ls|rm|forget-node`: functions' secrets at the origin (docs/secrets.md).

A value comes from `--from-file` (its bytes exactly) or standard input (one trailing newline
dropped; prompted for without echo on a terminal), never from argv: argv is visible to every user
of the machine in `ps` and lands in shell histories.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import NoReturn

from edge.cli._abort import abort
from edge.cli._origin import add_origin_options, origin_client, print_json
from edge.cli._wait import add_wait_options, problem, tally, wait
from edge.cli.deploy import table
from edge.control.admin import NodeStatus
from edge.control.client import ControlError, OriginClient

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `edge secret` and its subcommands."""
    common = argparse.ArgumentParser(add_help=False)
    add_origin_options(common)
    common.add_argument("--json", action="store_true", help="print JSON for scripts")
    waiting = argparse.ArgumentParser(add_help=False)
    add_wait_options(waiting)

    group = subparsers.add_parser(
        "secret", help="set, list and remove functions' secrets (given to them as environment variables)"
    )
    commands = group.add_subparsers(dest="secret_command", metavar="COMMAND", required=True)
    set_ = commands.add_parser(
        "set",
        parents=[common, waiting],
        help="set a secret from --from-file or standard input (never from the command line)",
    )
    set_.add_argument("name", help="the function")
    set_.add_argument("key", help="the environment variable the function sees")
    set_.add_argument("--from-file", type=Path, metavar="FILE", help="the value is this file's bytes")
    set_.set_defaults(func=_set)
    ls = commands.add_parser("ls", parents=[common], help="list a function's secrets (never their values)")
    ls.add_argument("name")
    ls.set_defaults(func=_ls)
    rm = commands.add_parser("rm", parents=[common, waiting], help="remove a secret")
    rm.add_argument("name")
    rm.add_argument("key")
    rm.set_defaults(func=_rm)
    forget = commands.add_parser(
        "forget-node",
        parents=[common],
        help="forget the public key a node registered, so that it may register a new one",
    )
    forget.add_argument("node_id")
    forget.set_defaults(func=_forget_node)


def _client(args: argparse.Namespace) -> OriginClient:
    return origin_client(args)


def _fail(exc: ControlError) -> NoReturn:
    abort(str(exc))


def _read_value(args: argparse.Namespace) -> bytes:
    if args.from_file is not None:
        try:
            return Path(args.from_file).read_bytes()
        except OSError as exc:
            abort(f"{args.from_file}: cannot read the secret's value: {exc.strerror}")
    if sys.stdin is None:
        abort(f"no value for {args.key}: pass --from-file FILE, or pipe the value to standard input")
    if sys.stdin.isatty():
        try:
            return getpass.getpass(f"value of {args.key} for {args.name} (not shown): ").encode()
        except (EOFError, KeyboardInterrupt):
            abort(f"no value for {args.key}: nothing was typed")
    data = sys.stdin.buffer.read()
    if data.endswith(b"\r\n"):
        return data[:-2]
    return data.removesuffix(b"\n")


def _function_failed(name: str, node: NodeStatus) -> str | None:
    for status in node.report.functions if node.report else []:
        if status.name == name and status.state in ("error", "failing"):
            return f"{name}: {status.error}"
    return None


def _wait(client: OriginClient, args: argparse.Namespace, revision: int, result: object) -> None:
    what = f"revision {revision}"
    outcomes = wait(
        client,
        args,
        what,
        lambda node: node.report is not None and node.report.applied_revision >= revision,
        lambda node: _function_failed(args.name, node),
    )
    error = problem(outcomes, what)
    if error is not None:
        abort(error)
    if args.json:
        print_json(result)
    else:
        print(tally(outcomes, what, args.seen_within))


def _set(args: argparse.Namespace) -> int:
    value = _read_value(args)
    client = _client(args)
    try:
        result = client.set_secret(args.name, args.key, value)
    except ControlError as exc:
        _fail(exc)
    if args.json and not args.wait:
        print_json(result)
    elif not args.json:
        print(f"set secret {result.key} of {result.name} ({result.size} bytes) at revision {result.revision}")
        if result.overrides_env:
            print(f"{result.key} is in [env] of {result.name}'s edge.toml too: the secret wins")
    if args.wait:
        _wait(client, args, result.revision, result)
    return 0


def _rm(args: argparse.Namespace) -> int:
    client = _client(args)
    try:
        result = client.remove_secret(args.name, args.key)
    except ControlError as exc:
        _fail(exc)
    if args.json and not args.wait:
        print_json(result)
    elif not args.json:
        print(f"removed secret {result.key} of {result.name} at revision {result.revision}")
    if args.wait:
        _wait(client, args, result.revision, result)
    return 0


def _ls(args: argparse.Namespace) -> int:
    try:
        listing = _client(args).secrets(args.name)
    except ControlError as exc:
        _fail(exc)
    if args.json:
        print_json(listing)
        return 0
    if not listing.secrets:
        print(f"no secrets for {listing.name}")
    else:
        rows = [
            [
                s.key,
                f"{s.size} B",
                datetime.fromtimestamp(s.updated_at, UTC).strftime("%Y-%m-%d %H:%M:%S"),
                "overrides [env]" if s.overrides_env else "-",
            ]
            for s in listing.secrets
        ]
        print(table(["KEY", "SIZE", "UPDATED (UTC)", "NOTE"], rows))
    if listing.nodes_without_key:
        print(
            f"nodes without a public key get no secrets: {', '.join(listing.nodes_without_key)}"
            " (an edge version from before secrets: upgrade and restart them)"
        )
    return 0


def _forget_node(args: argparse.Namespace) -> int:
    try:
        result = _client(args).forget_node_key(args.node_id)
    except ControlError as exc:
        _fail(exc)
    if args.json:
        print_json(result)
    else:
        print(
            f"forgot the public key {result.public_key} of node {result.node_id}; its next"
            " registration (it retries while refused, and at every start) registers its current key"
        )
    return 0
