"""Handler kinds: turn the entrypoint a manifest names into an `edge` handler(request).

`kind = "edge"` is the entrypoint itself. The others (`lambda`, `openfaas`, `asgi`, `wsgi`) are
adapters in their own modules, imported only by functions of that kind (a cold start of an `edge`
function pays for none of them). Each adapter module has

    adapt(target, options) -> Adapted

raising `KindError` when `target` does not have the kind's shape; the message names the kind,
the signature expected and the fix. The node reports it as the function's load error.

Standard library only; used inside isolates (as `edgefn._kinds`) and outside them by
`edgefn.testing` (as `isolates.guest.edgefn._kinds`): imports are relative.
"""

from __future__ import annotations

TYPE_CHECKING = False  # importing typing would cost ~10 ms of every cold start
if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from typing import Any

__all__ = [
    "KINDS",
    "Adapted",
    "KindError",
    "adapt",
    "describe",
    "guess",
    "guess_shape",
    "mismatch",
    "positional",
]

# kind -> the module (in this package) whose `adapt` makes an edge handler of the entrypoint.
KINDS = {"edge": "", "lambda": "_lambda", "openfaas": "_openfaas", "asgi": "_asgi", "wsgi": "_wsgi"}


class KindError(LookupError):
    """The entrypoint does not have its kind's shape; the message says what was expected and the fix."""


class Adapted:
    """What the runtime serves: `handler(request)` (sync or `async def`), and what to run first.

    `startup` (None or a coroutine function) runs once on the isolate's event loop before the
    function is reported loaded (ASGI lifespan startup); if it raises, the function fails to load.
    `shutdown` likewise when the isolate stops.
    """

    __slots__ = ("handler", "shutdown", "startup")

    def __init__(
        self,
        handler: Callable[[Any], Any],
        startup: Callable[[], Awaitable[None]] | None = None,
        shutdown: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.handler = handler
        self.startup = startup
        self.shutdown = shutdown


def adapt(kind: str, target: Any, options: dict[str, Any], entrypoint: str) -> Adapted:
    """The servable form of `target` (the loaded entrypoint, `entrypoint` its "module:attribute").

    `options` carries what adapters need from the manifest and the node: `lambda_payload`,
    `memory_mb`, `timeout_ms`. Raises KindError.
    """
    module = KINDS.get(kind)
    if module is None:
        raise KindError(f"unknown kind {kind!r}; expected one of {', '.join(KINDS)}")
    if not module:
        _check_edge(target, entrypoint)
        return Adapted(target)
    import importlib

    adapter = importlib.import_module(f".{module}", __package__)
    adapted: Adapted = adapter.adapt(target, options, entrypoint)
    return adapted


def positional(target: Any) -> tuple[int, int, tuple[str, ...]] | None:
    """(required, maximum, names) of the positional parameters `target` is called with.

    maximum is a large number when it takes *args. None when it cannot be told cheaply (a class,
    a builtin, functools.partial...): callers then do not check. Uses code objects, not
    `inspect` (whose imports cost milliseconds of a cold start).
    """
    skip = 0
    function = target
    if hasattr(function, "__func__") and hasattr(function, "__self__"):
        # A bound method forwards __code__ to its function, whose first parameter is self.
        function, skip = function.__func__, 1
    if not hasattr(function, "__code__"):
        if hasattr(function, "__func__"):  # a bound method
            function, skip = function.__func__, 1
        elif isinstance(target, type):
            return None
        else:  # a callable instance: its class's __call__, without self
            function = type(target).__dict__.get("__call__")
            for klass in type(target).__mro__:
                if "__call__" in klass.__dict__:
                    function = klass.__dict__["__call__"]
                    break
            if isinstance(function, staticmethod):
                function, skip = function.__func__, 0
            else:
                skip = 1
    code = getattr(function, "__code__", None)
    if code is None:
        return None
    names = code.co_varnames[: code.co_argcount][skip:]
    defaults = len(getattr(function, "__defaults__", None) or ())
    required = max(0, code.co_argcount - skip - defaults)
    maximum = 1 << 16 if code.co_flags & 0x04 else code.co_argcount - skip  # CO_VARARGS
    return required, maximum, names


def describe(target: Any) -> str:
    """`(a, b)`: the positional parameters, as a message shows them."""
    shape = positional(target)
    if shape is None:
        return "(...)"
    return f"({', '.join(shape[2])}{', *args' if shape[1] > len(shape[2]) else ''})"


def guess(target: Any) -> str:
    """The kind `target` looks like, from its positional parameters; "" when it is not clear."""
    shape = positional(target)
    return "" if shape is None else guess_shape(*shape)


def guess_shape(required: int, maximum: int, names: tuple[str, ...]) -> str:
    """The kind positional parameters look like (`positional`'s answer, or read from source)."""
    lowered = tuple(name.lower() for name in names)
    if required <= 1 <= maximum:
        return "edge"
    if required == 3 or lowered[:3] == ("scope", "receive", "send"):
        return "asgi"
    if required == 2 and lowered[:2] in (("environ", "start_response"), ("env", "start_response")):
        return "wsgi"
    if required == 2:
        return "lambda"
    return ""


_FIXES = {
    "lambda": 'this looks like a Lambda handler(event, context): set `kind = "lambda"` '
    '(or `kind = "openfaas"` for an OpenFaaS python3-http handle(event, context))',
    "asgi": 'this looks like an ASGI application(scope, receive, send): set `kind = "asgi"`',
    "wsgi": 'this looks like a WSGI application(environ, start_response): set `kind = "wsgi"`',
    "edge": 'this looks like an edge handler(request): set `kind = "edge"` (the default)',
}


def mismatch(kind: str, expected: str, target: Any, entrypoint: str) -> KindError:
    """The error for an entrypoint that does not fit `kind`; says which kind it looks like."""
    looks = guess(target)
    fix = _FIXES.get(looks, "") if looks != kind else ""
    message = f"kind = {kind!r} expects {expected}; entrypoint {entrypoint!r} takes {describe(target)}"
    return KindError(f"{message}: {fix} in edge.toml" if fix else message)


def _check_edge(target: Any, entrypoint: str) -> None:
    shape = positional(target)
    if shape is not None and not shape[0] <= 1 <= shape[1]:
        raise mismatch("edge", "handler(request)", target, entrypoint)
