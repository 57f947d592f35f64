"""`edge auth`: helpers for function auth (`[auth]` in edge.toml, docs/auth.md)."""

from __future__ import annotations

import argparse
import getpass
import hashlib
import sys
from typing import Any

from edge.cli._abort import abort

__all__ = ["MIN_KEY_CHARS", "register"]

# Shorter keys can be guessed by a client that tries many (the node compares hashes, not rates).
MIN_KEY_CHARS = 16


def register(subparsers: Any) -> None:
    """Add `edge auth hash-key`."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "auth", help="function auth helpers", description="Helpers for [auth] in edge.toml."
    )
    commands = parser.add_subparsers(dest="auth_command", metavar="COMMAND", required=True)
    hash_key = commands.add_parser(
        "hash-key",
        help="print the sha256 of an API key read from stdin, for [auth] keys_sha256",
        description="Read one API key from stdin (never from argv: other users see it in ps) and print"
        " its sha256 for `keys_sha256` in edge.toml. Make a key with e.g. `openssl rand -hex 32`.",
    )
    hash_key.set_defaults(func=_hash_key)


def _hash_key(args: argparse.Namespace) -> int:
    typed = sys.stdin.isatty()
    key = getpass.getpass("API key (not shown): ") if typed else sys.stdin.readline()
    key = key.strip()  # the node strips the header value the same way
    if len(key) < MIN_KEY_CHARS:
        abort(
            f"stdin: Expected an API key of at least {MIN_KEY_CHARS} characters, got {len(key)};"
            " make one with `openssl rand -hex 32`"
        )
    if any(character.isspace() for character in key) or not key.isascii():
        abort("stdin: Expected an API key of printable ASCII without spaces (it travels in an HTTP header)")
    print(hashlib.sha256(key.encode()).hexdigest())
    return 0
