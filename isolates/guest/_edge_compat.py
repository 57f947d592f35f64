"""One face over the low-level interpreter APIs of Python 3.13 and 3.14.

`_interpreters.exec(id, code, shared)`: 3.13 takes `shared=None`, 3.14 wants a dict. Both return
None or an exception snapshot (with `.errdisplay`) for an uncaught error in the code.
Threads: `_thread.start_joinable_thread` is what `threading.Thread.start` calls in both;
3.14 also gives the OS a thread's name (`_thread.set_name`).
Messages between host and guest go over pipes, not `_interpqueues` (whose every operation walks
all queues and interpreters of the process in 3.13; see _edge_runtime).
The host imports it as `isolates.guest._edge_compat`; inside an isolate the guest runtime imports
the same file as `_edge_compat`, so it uses the standard library only.
"""

from __future__ import annotations

import _interpreters
import _thread

TYPE_CHECKING = False  # importing typing would cost ~10 ms of every cold start
if TYPE_CHECKING:
    from types import CodeType
    from typing import Any

__all__ = [
    "InterpreterError",
    "call_exec",
    "create_interpreter",
    "destroy_interpreter",
    "start_thread",
]

InterpreterError = _interpreters.InterpreterError


def create_interpreter() -> int:
    """A new isolated interpreter (own GIL, own obmalloc); returns its id."""
    iid: int = _interpreters.create("isolated")
    return iid


def destroy_interpreter(iid: int) -> None:
    """Destroy an interpreter that no thread is running in."""
    _interpreters.destroy(iid)


def call_exec(iid: int, source: str | CodeType, shared: dict[str, Any] | None = None) -> str | None:
    """Run `source` (text, or a code object without arguments) in the interpreter's __main__;
    returns None, or the formatted uncaught error."""
    # Always a dict: 3.14 documents shared=None but refuses it ("argument 3 must be dict").
    error = _interpreters.exec(iid, source, shared if shared is not None else {})
    if error is None:
        return None
    # An exception snapshot in both (only the high-level 3.14 API raises ExecutionFailed).
    formatted = getattr(error, "errdisplay", None) or getattr(error, "formatted", None)
    return str(formatted or error)


_set_name = getattr(_thread, "set_name", None)


def start_thread(function: Any, name: str) -> Any:
    """Start a non-daemon thread running `function()`; returns its handle (`join()`, `ident`).

    `threading.Thread` without importing `threading`, which costs every interpreter ≈ 0.4 MiB.
    """
    if _set_name is None:
        return _thread.start_joinable_thread(function, daemon=False)

    def named() -> None:
        _set_name(name)
        function()

    return _thread.start_joinable_thread(named, daemon=False)
