"""Argument types shared by the subcommand groups; each error names the value and what was expected."""

from __future__ import annotations

import argparse

__all__ = ["count", "percent", "seconds"]


def percent(value: str) -> int:
    """A whole percentage from 1 to 100."""
    if not value.isdigit() or not 1 <= int(value) <= 100:
        raise argparse.ArgumentTypeError(f"Expected a percentage from 1 to 100, got {value!r}")
    return int(value)


def seconds(value: str) -> float:
    """A number of seconds above zero."""
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not number > 0:
        raise argparse.ArgumentTypeError(f"Expected a number of seconds > 0, got {value!r}")
    return number


def count(value: str) -> int:
    """An integer from 1 up."""
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"Expected an integer >= 1, got {value!r}")
    return int(value)
