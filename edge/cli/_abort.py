"""The one way the CLI ends with an error."""

from __future__ import annotations

import sys
from typing import NoReturn

__all__ = ["abort"]


def abort(message: str, code: int = 1) -> NoReturn:
    """Print `error: message` on stderr and exit with `code`."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(code)
