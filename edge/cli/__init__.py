"""The `edge` command: one file per subcommand group, each with `register(subparsers)`."""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Sequence

__all__ = ["main"]

# Each module defines `register(subparsers)`, which adds its subcommands and sets `func`
# (called with the parsed namespace, returning an exit code).
_GROUPS = (
    "edge.cli.node",
    "edge.cli.origin",
    "edge.cli.deploy",
    "edge.cli.up",
    "edge.cli.init",
    "edge.cli.invoke",
    "edge.cli.logs",
    "edge.cli.dev",
)


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser, with every subcommand group registered."""
    parser = argparse.ArgumentParser(prog="edge", description="Self-hosted edge functions.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in _GROUPS:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `edge` command; returns the exit code."""
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code
