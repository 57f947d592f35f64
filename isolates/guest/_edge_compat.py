"""One face over the low-level interpreter APIs of Python 3.13 and 3.14.

3.13: `_interpqueues.create(maxsize, fmt, unboundop)`, `put(qid, obj, fmt, unboundop)`,
`get(qid) -> (obj, fmt, unboundop)`. 3.14: `create(maxsize, unboundop, fallback)`,
`put(qid, obj, unboundop, fallback)`, `get(qid) -> (obj, unboundop)`. In both, `get` on an
empty queue raises (3.13 imports `test.support` to do so): callers check `count()` first.
`_interpreters.exec(id, code, shared)`: 3.13 takes `shared=None`, 3.14 wants a dict. Both return
None or an exception snapshot (with `.errdisplay`) for an uncaught error in the code.
Threads: `_thread.start_joinable_thread` is what `threading.Thread.start` calls in both;
3.14 also gives the OS a thread's name (`_thread.set_name`).
The host imports it as `isolates.guest._edge_compat`; inside an isolate the guest runtime imports
the same file as `_edge_compat`, so it uses the standard library only.
"""

from __future__ import annotations

import _interpqueues
import _interpreters
import _thread
import sys

TYPE_CHECKING = False  # importing typing would cost ~10 ms of every cold start
if TYPE_CHECKING:
    from types import CodeType
    from typing import Any

__all__ = [
    "InterpreterError",
    "call_exec",
    "create_interpreter",
    "destroy_interpreter",
    "queue_count",
    "queue_create",
    "queue_destroy",
    "queue_get",
    "queue_put",
    "start_thread",
]

# UNBOUND: an item whose sending interpreter is gone stays in the queue as a marker.
# REMOVE (1) would drop it silently and lose data.
_UNBOUND = 3
_SHARED_ONLY = 0
_PY314 = sys.version_info >= (3, 14)

InterpreterError = _interpreters.InterpreterError
queue_count = _interpqueues.get_count
queue_destroy = _interpqueues.destroy


if _PY314:

    def queue_create() -> int:
        """A new unbounded queue of shareable objects; returns its id."""
        qid: int = _interpqueues.create(0, _UNBOUND, _SHARED_ONLY)
        return qid

    def queue_put(qid: int, obj: Any) -> None:
        """Append a shareable object."""
        _interpqueues.put(qid, obj, _UNBOUND, _SHARED_ONLY)

else:

    def queue_create() -> int:
        """A new unbounded queue of shareable objects; returns its id."""
        qid: int = _interpqueues.create(0, _SHARED_ONLY, _UNBOUND)
        return qid

    def queue_put(qid: int, obj: Any) -> None:
        """Append a shareable object."""
        _interpqueues.put(qid, obj, _SHARED_ONLY, _UNBOUND)


def queue_get(qid: int) -> Any:
    """Pop the oldest object; only call when `queue_count(qid)` is non-zero."""
    return _interpqueues.get(qid)[0]


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
