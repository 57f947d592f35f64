"""Deploy-time entrypoint check without running the code: does `entrypoint` fit `kind`?

The origin must not import uploaded code in its own process, so this reads the entrypoint's
module with `ast` and refuses only what is certain to fail the node's check at load
(isolates/guest/edgefn/_kinds.py, with its wording):

- the attribute is not bound at the module's top level at all (no def, class, assignment or
  import of it, no `from x import *`, no module `__getattr__`, no `global` of it, no `globals()`);
- it is a plain (undecorated) `def`, `async def` or `lambda` (or `Class.method`) whose positional
  parameters do not fit the kind, as the node's adapters count them: edge takes 1; lambda and
  openfaas 2 (not `(environ, start_response)` nor `(scope, receive, send)`); wsgi 2, not
  `async def`; asgi an `async def` of 3;
- it is assigned from a call of a known framework's application class of the other kind
  (`Flask(...)`, `Bottle(...)` are WSGI; `Starlette(...)`, `FastAPI(...)`, `Quart(...)`,
  `Litestar(...)` are ASGI).

Anything it cannot tell passes: the node imports the entrypoint and checks it again at load.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator

from isolates.guest.edgefn._kinds import _FIXES, guess_shape
from isolates.manifest import MANIFEST_NAME, Manifest

__all__ = ["EXPECTED", "FRAMEWORKS", "entrypoint_problem"]

# kind -> (what its adapter's message says it expects, positional parameters it passes, whether
# the def must be `async def` (True), must not be (False) or may be either (None)).
EXPECTED = {
    "edge": ("handler(request)", 1, None),
    "lambda": ("handler(event, context)", 2, None),
    "openfaas": ("handle(event, context)", 2, None),
    "wsgi": ("a WSGI application: app(environ, start_response)", 2, False),
    "asgi": ("an ASGI 3 application: async def app(scope, receive, send)", 3, True),
}
# Parameters the lambda and openfaas adapters refuse although there are two of them.
_NOT_EVENT = frozenset({"asgi", "wsgi"})

# Application classes whose instances are of one kind only, by the called name.
FRAMEWORKS = {
    "Flask": "wsgi",
    "Bottle": "wsgi",
    "Starlette": "asgi",
    "FastAPI": "asgi",
    "Quart": "asgi",
    "Litestar": "asgi",
}

_DESCRIBED = {"asgi": "an ASGI application", "wsgi": "a WSGI application"}
_MANY = 1 << 16  # the maximum of a function that takes *args
_DEFS = ast.FunctionDef | ast.AsyncFunctionDef
_DYNAMIC = frozenset({"globals", "vars", "locals", "exec", "eval", "setattr", "__import__"})


class _Unknown(Exception):
    """The module binds names in ways a static reading cannot follow."""


def entrypoint_problem(manifest: Manifest, module_path: str, source: bytes) -> str | None:
    """Why `manifest.entrypoint` surely does not fit `manifest.kind`, or None when it may.

    `module_path` is the entrypoint module's file in the bundle and `source` its content (which
    compiles: `validate` checked that first). The message names edge.toml, the place, what was
    expected and the fix.
    """
    if manifest.kind not in EXPECTED:
        return None
    try:
        tree = ast.parse(source, module_path)
    except (SyntaxError, ValueError):
        return None
    entrypoint = f"{manifest.module}:{manifest.attribute}"
    first, *rest = manifest.attribute.split(".")
    try:
        bindings = _bindings(tree)
    except _Unknown:
        return None
    found = bindings.get(first)
    if found is None:
        return _undefined(entrypoint, module_path, first, bindings)
    problems = [_binding_problem(manifest.kind, node, rest, entrypoint, module_path) for node in found]
    # Any binding the check cannot fault may be the one that runs last.
    if any(problem is None for problem in problems):
        return None
    return problems[-1]


def _undefined(entrypoint: str, module_path: str, name: str, bindings: dict[str, list[ast.AST]]) -> str:
    module = entrypoint.partition(":")[0]
    callables = [
        bound
        for bound, nodes in bindings.items()
        if not bound.startswith("_") and any(isinstance(node, _DEFS | ast.ClassDef) for node in nodes)
    ]
    fix = "define it, or point `entrypoint` at the handler"
    if len(callables) == 1:
        fix = f'define it, or point `entrypoint` at the handler: entrypoint = "{module}:{callables[0]}"'
    defines = f" (it defines {', '.join(callables)})" if callables else ""
    return (
        f"{MANIFEST_NAME}: entrypoint {entrypoint!r} is not defined: {module_path} has no top-level "
        f"def, class, assignment or import of `{name}`{defines}; {fix} - at `$.entrypoint`"
    )


def _binding_problem(
    kind: str, node: ast.AST, rest: list[str], entrypoint: str, module_path: str
) -> str | None:
    """What is wrong with one binding of the attribute, or None when it fits or cannot be told."""
    skip = 0
    if rest:
        method = _method(node, rest)
        if method is None:
            return None
        node, skip = method
    elif isinstance(node, _DEFS) and node.decorator_list:
        return None  # a decorator may return anything
    if isinstance(node, _DEFS):
        is_async = isinstance(node, ast.AsyncFunctionDef)
        return _signature_problem(kind, node.args, is_async, skip, node, entrypoint, module_path)
    value = node.value if isinstance(node, ast.Assign | ast.AnnAssign) else None
    if isinstance(value, ast.Lambda):
        return _signature_problem(kind, value.args, False, 0, value, entrypoint, module_path)
    if isinstance(value, ast.Call):
        return _framework_problem(kind, value, entrypoint, module_path)
    return None


def _method(node: ast.AST, rest: list[str]) -> tuple[ast.FunctionDef | ast.AsyncFunctionDef, int] | None:
    """`Class.method`: the method's def and how many of its parameters the access binds."""
    if len(rest) != 1 or not isinstance(node, ast.ClassDef) or node.decorator_list:
        return None
    found = [child for child in node.body if rest[0] in _targets(child)]
    if len(found) != 1 or not isinstance(found[0], _DEFS):
        return None
    method = found[0]
    decorators = [d.id if isinstance(d, ast.Name) else "" for d in method.decorator_list]
    if decorators == ["classmethod"]:
        return method, 1
    # Through the class a plain method is a function (`self` its first parameter), as is a staticmethod.
    if decorators in ([], ["staticmethod"]):
        return method, 0
    return None


def _signature_problem(
    kind: str,
    arguments: ast.arguments,
    is_async: bool,
    skip: int,
    node: ast.AST,
    entrypoint: str,
    module_path: str,
) -> str | None:
    expected, passed, wants_async = EXPECTED[kind]
    names = tuple(arg.arg for arg in [*arguments.posonlyargs, *arguments.args])[skip:]
    required = max(0, len(names) - len(arguments.defaults))
    maximum = _MANY if arguments.vararg is not None else len(names)
    looks = guess_shape(required, maximum, names)
    fits = required <= passed <= maximum and not (kind in ("lambda", "openfaas") and looks in _NOT_EVENT)
    if fits and wants_async in (None, is_async):
        return None
    shown = f"{'async ' if is_async else ''}({', '.join(names)}{', *args' if arguments.vararg else ''})"
    where = f"{module_path}:{getattr(node, 'lineno', 1)}"
    message = f"kind = {kind!r} expects {expected}; entrypoint {entrypoint!r} ({where}) takes {shown}"
    if fits and wants_async:
        return f"{MANIFEST_NAME}: {message}: define it with `async def` - at `$.entrypoint`"
    if fits:  # a WSGI kind given an `async def`
        looks = "asgi"
    if looks in _FIXES and looks != kind:
        return f"{MANIFEST_NAME}: {message}: {_FIXES[looks]} in {MANIFEST_NAME} - at `$.kind`"
    return (
        f"{MANIFEST_NAME}: {message}: give it the parameters of {expected}, or point `entrypoint` at "
        "the handler - at `$.entrypoint`"
    )


def _framework_problem(kind: str, call: ast.Call, entrypoint: str, module_path: str) -> str | None:
    function = call.func
    name = (
        function.id
        if isinstance(function, ast.Name)
        else function.attr
        if isinstance(function, ast.Attribute)
        else ""
    )
    framework_kind = FRAMEWORKS.get(name)
    if framework_kind is None or framework_kind == kind:
        return None
    expected = EXPECTED[kind][0]
    return (
        f"{MANIFEST_NAME}: kind = {kind!r} expects {expected}; entrypoint {entrypoint!r} "
        f"({module_path}:{call.lineno}) is {_DESCRIBED[framework_kind]} ({name}): "
        f"{_FIXES[framework_kind]} in {MANIFEST_NAME} - at `$.kind`"
    )


def _bindings(tree: ast.Module) -> dict[str, list[ast.AST]]:
    """Every top-level binding: name -> the statements that bind it; raises _Unknown."""
    bound: dict[str, list[ast.AST]] = {}
    for statement in _top_level(tree.body):
        for name in _targets(statement):
            bound.setdefault(name, []).append(statement)
    if "__getattr__" in bound:
        raise _Unknown
    for node in ast.walk(tree):
        if isinstance(node, ast.Global):
            for name in node.names:
                bound.setdefault(name, []).append(node)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _DYNAMIC:
            raise _Unknown
    return bound


def _top_level(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """The statements run at import, blocks (if, try, with, for, while, match) flattened."""
    for statement in body:
        yield statement
        if isinstance(statement, ast.If | ast.For | ast.AsyncFor | ast.While | ast.With | ast.AsyncWith):
            yield from _top_level(statement.body)
            yield from _top_level(getattr(statement, "orelse", []))
        elif isinstance(statement, ast.Try | ast.TryStar):
            for block in (statement.body, statement.orelse, statement.finalbody):
                yield from _top_level(block)
            for handler in statement.handlers:
                yield from _top_level(handler.body)
        elif isinstance(statement, ast.Match):
            for case in statement.cases:
                yield from _top_level(case.body)


def _targets(statement: ast.AST) -> Iterator[str]:
    """The names one statement binds in its own scope (not inside defs, classes or lambdas)."""
    if isinstance(statement, _DEFS | ast.ClassDef):
        yield statement.name
        return
    if isinstance(statement, ast.Import | ast.ImportFrom):
        for alias in statement.names:
            if alias.name == "*":
                raise _Unknown
            yield alias.asname or alias.name.partition(".")[0]
        return
    if isinstance(statement, ast.Try | ast.TryStar):
        for handler in statement.handlers:
            if handler.name:
                yield handler.name
    if isinstance(statement, ast.Match):
        for case in statement.cases:
            for node in ast.walk(case.pattern):
                if isinstance(node, ast.MatchAs | ast.MatchStar) and node.name:
                    yield node.name
                elif isinstance(node, ast.MatchMapping) and node.rest:
                    yield node.rest
    for node in _own_nodes(statement):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store | ast.Del):
            yield node.id


def _own_nodes(statement: ast.AST) -> Iterator[ast.AST]:
    """The nodes of a statement's own header and expressions: not nested blocks, defs or lambdas."""
    for field, value in ast.iter_fields(statement):
        if field in ("body", "orelse", "finalbody", "handlers", "cases") and isinstance(value, list):
            continue
        for child in value if isinstance(value, list) else [value]:
            if isinstance(child, ast.AST):
                yield from _walk_scope(child)


def _walk_scope(node: ast.AST) -> Iterator[ast.AST]:
    yield node
    if isinstance(node, ast.Lambda | _DEFS | ast.ClassDef):
        return
    if isinstance(node, ast.ListComp | ast.SetComp | ast.DictComp | ast.GeneratorExp):
        # Only a walrus in a comprehension binds in the enclosing scope.
        for inner in ast.walk(node):
            if isinstance(inner, ast.NamedExpr):
                yield from _walk_scope(inner.target)
        return
    for child in ast.iter_child_nodes(node):
        yield from _walk_scope(child)
