"""The `edge` command: one file per subcommand group, each with `register(subparsers)`."""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
from collections.abc import Sequence

__all__ = ["main", "version"]

# Each module defines `register(subparsers)`, which adds its subcommands and sets `func`
# (called with the parsed namespace, returning an exit code).
_GROUPS = (
    "edge.cli.node",
    "edge.cli.origin",
    "edge.cli.deploy",
    "edge.cli.secret",
    "edge.cli.up",
    "edge.cli.init",
    "edge.cli.invoke",
    "edge.cli.logs",
    "edge.cli.dev",
    "edge.cli.auth",
)

DISTRIBUTION = "edge-functions"


def version() -> str:
    """`edge X.Y.Z`: the installed package's version."""
    try:
        return f"edge {importlib.metadata.version(DISTRIBUTION)}"
    except importlib.metadata.PackageNotFoundError:
        return f"edge (version unknown: the {DISTRIBUTION} package is not installed; run `pip install -e .`)"


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser, with every subcommand group registered."""
    parser = argparse.ArgumentParser(
        prog="edge",
        description="Self-hosted edge functions.",
        epilog="Start with `edge up` (an origin and a node on loopback) or `edge dev DIR`.",
    )
    parser.add_argument("--version", action="version", version=version())
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _GROUPS:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `edge` command; returns the exit code (`edge` alone prints the help)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    code: int = args.func(args)
    return code
