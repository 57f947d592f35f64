"""Argument types shared by the subcommand groups; each error names the value and what was expected."""

from __future__ import annotations

import argparse
import re

__all__ = ["count", "duration", "percent", "seconds"]

_DURATION = re.compile(r"([1-9][0-9]{0,6})([mhd])")
_UNIT_S = {"m": 60, "h": 3600, "d": 86400}


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


def duration(value: str) -> float:
    """A lifetime such as 90m, 12h or 30d (whole minutes, hours or days), in seconds."""
    found = _DURATION.fullmatch(value)
    if found is None:
        raise argparse.ArgumentTypeError(
            f"Expected a whole number of minutes, hours or days such as 90m, 12h or 30d, got {value!r}"
        )
    return float(int(found[1]) * _UNIT_S[found[2]])
