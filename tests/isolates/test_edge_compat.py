"""The 3.13/3.14 compatibility layer over `_interpreters`, called directly."""

from __future__ import annotations

from isolates.guest._edge_compat import call_exec, create_interpreter, destroy_interpreter


def test_exec_without_shared_values_and_with_an_uncaught_error() -> None:
    iid = create_interpreter()
    try:
        assert call_exec(iid, "x = 1") is None
        assert call_exec(iid, "assert x == 1 and y == b'z'", {"y": b"z"}) is None
        error = call_exec(iid, "raise ValueError('boom')")
        assert error is not None
        assert error.splitlines()[0] == "Traceback (most recent call last):"
        assert error.splitlines()[-1] == "ValueError: boom"
    finally:
        destroy_interpreter(iid)
