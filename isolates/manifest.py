"""The function manifest, `edge.toml`: decoded with msgspec into typed structs, checked, explained."""

from __future__ import annotations

import re
from pathlib import Path

import msgspec

from isolates.access import AuthPolicy, CorsPolicy, check_access

__all__ = [
    "HANDLER_KINDS",
    "ISOLATION_LEVELS",
    "LAMBDA_PAYLOADS",
    "MANIFEST_NAME",
    "SCALE_LIMITS",
    "CachePolicy",
    "Manifest",
    "ManifestError",
    "Permissions",
    "Scale",
    "decode_manifest",
    "load_manifest",
]

MANIFEST_NAME = "edge.toml"

_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_ENTRYPOINT = re.compile(rf"{_IDENT}(\.{_IDENT})*:{_IDENT}(\.{_IDENT})*")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ROUTE = re.compile(r"/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*")
MAX_TIMEOUT_MS = 15 * 60 * 1000
# `isolation = ...`: where the function runs (isolates/backends/__init__.py BACKENDS has one per name).
ISOLATION_LEVELS = ("interpreter", "process")
# `kind = ...`: the shape of the entrypoint (isolates/guest/edgefn/_kinds.py adapts each to a request).
HANDLER_KINDS = ("edge", "lambda", "openfaas", "asgi", "wsgi")
# `lambda_payload = ...`: the API Gateway event format a `kind = "lambda"` handler receives.
LAMBDA_PAYLOADS = ("1.0", "2.0")
# The entrypoint when the manifest names none: an application object for ASGI and WSGI kinds.
_DEFAULT_ENTRYPOINTS = {"asgi": "main:app", "wsgi": "main:app"}
_NET_TARGET = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+|\*):([0-9]{1,5}|\*)")


class ManifestError(ValueError):
    """A manifest that cannot be used; the message names the file, the place and the bad value."""


class CachePolicy(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """`[cache]`: the default freshness for responses that carry no caching headers of their own."""

    ttl: int = 0


class Scale(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """`[scale]`: how many instances of the function a node runs and how requests wait for one.

    A key left out takes the node's default (`[scale]` in config/node.toml); docs/scaling.md.
    """

    min_instances: int | None = None
    max_instances: int | None = None
    # In-flight requests one instance takes (sync handlers: 1 unless `threadsafe`).
    concurrency: int | None = None
    threadsafe: bool | None = None
    max_queue: int | None = None
    queue_timeout_ms: int | None = None
    idle_timeout_s: float | None = None


class Permissions(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """`[permissions]`: what a function may reach beyond its own bundle (Deno-style grants).

    `net` is true (any host), false (none) or a list of "host:port" targets ("*" matches any
    host or port); `read`/`write` are absolute paths (a directory grants everything under it).
    """

    net: bool | list[str] = True
    read: list[str] = []
    write: list[str] = []
    subprocess: bool = False
    ctypes: bool = False


class Manifest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """`edge.toml`: what a function is called, where its handler is and how it runs."""

    name: str = ""
    # "" in the file: `main:handler`, or `main:app` for the asgi and wsgi kinds.
    entrypoint: str = ""
    # What the entrypoint is: an `edge` handler(request), a Lambda handler(event, context), an
    # OpenFaaS handle(event, context), an ASGI 3 application or a WSGI application.
    kind: str = "edge"
    # kind = "lambda": the API Gateway payload format version of the event ("1.0" REST, "2.0" HTTP API).
    lambda_payload: str = "2.0"
    timeout_ms: int = 30_000
    env: dict[str, str] = {}
    routes: list[str] = []
    cache: CachePolicy = CachePolicy()
    # "interpreter" (a subinterpreter in the node's worker) or "process" (a confined child process).
    isolation: str = "interpreter"
    # Process isolation: the child's memory limit in MiB (0: the node's default, `process_memory_mb`).
    memory_mb: int = 0
    permissions: Permissions = Permissions()
    # Who may call the function and which web pages may (isolates/access.py, docs/auth.md).
    auth: AuthPolicy | None = None
    cors: CorsPolicy | None = None
    scale: Scale = Scale()

    @property
    def module(self) -> str:
        """The module part of the entrypoint."""
        return self._target.partition(":")[0]

    @property
    def attribute(self) -> str:
        """The attribute part of the entrypoint."""
        return self._target.partition(":")[2]

    @property
    def _target(self) -> str:
        return self.entrypoint or _DEFAULT_ENTRYPOINTS.get(self.kind, "main:handler")


def _fail(source: str, expected: str, value: object, where: str) -> ManifestError:
    return ManifestError(f"{source}: Expected {expected}, got {value!r} - at `{where}`")


def _check(manifest: Manifest, source: str) -> None:
    if manifest.kind not in HANDLER_KINDS:
        expected = " or ".join(f'"{kind}"' for kind in HANDLER_KINDS)
        raise _fail(source, expected, manifest.kind, "$.kind")
    if manifest.lambda_payload not in LAMBDA_PAYLOADS:
        expected = " or ".join(f'"{version}"' for version in LAMBDA_PAYLOADS)
        raise _fail(source, expected, manifest.lambda_payload, "$.lambda_payload")
    if not manifest.entrypoint:
        manifest.entrypoint = _DEFAULT_ENTRYPOINTS.get(manifest.kind, "main:handler")
    if not _NAME.fullmatch(manifest.name):
        raise _fail(source, "a name of 1-63 lowercase letters, digits, '-' or '_'", manifest.name, "$.name")
    if not _ENTRYPOINT.fullmatch(manifest.entrypoint):
        raise _fail(source, "`module:attribute`", manifest.entrypoint, "$.entrypoint")
    if not 1 <= manifest.timeout_ms <= MAX_TIMEOUT_MS:
        raise _fail(source, f"`int` from 1 to {MAX_TIMEOUT_MS}", manifest.timeout_ms, "$.timeout_ms")
    for key in manifest.env:
        if not _ENV_NAME.fullmatch(key):
            raise _fail(source, "an environment variable name", key, f"$.env.{key}")
    for index, route in enumerate(manifest.routes):
        if not _ROUTE.fullmatch(route) or route.startswith("/_edge") or "//" in route:
            raise _fail(
                source, "a path prefix starting with '/' (not under /_edge)", route, f"$.routes[{index}]"
            )
    if manifest.cache.ttl < 0:
        raise _fail(source, "`int` >= 0", manifest.cache.ttl, "$.cache.ttl")
    if manifest.isolation not in ISOLATION_LEVELS:
        expected = " or ".join(f'"{level}"' for level in ISOLATION_LEVELS)
        raise _fail(source, expected, manifest.isolation, "$.isolation")
    if not 0 <= manifest.memory_mb <= 1 << 20:
        raise _fail(
            source, "`int` from 0 (the node's default) to 1048576 MiB", manifest.memory_mb, "$.memory_mb"
        )
    _check_permissions(manifest.permissions, source)
    check_access(manifest.auth, manifest.cors, lambda *fault: _fail(source, *fault))
    _check_scale(manifest.scale, source)


# `[scale]` key -> (lowest, highest) accepted value.
SCALE_LIMITS: dict[str, tuple[float, float]] = {
    "min_instances": (0, 64),
    "max_instances": (1, 64),
    "concurrency": (1, 10_000),
    "max_queue": (0, 100_000),
    "queue_timeout_ms": (1, MAX_TIMEOUT_MS),
    "idle_timeout_s": (0.01, 86_400),
}


def _check_scale(scale: Scale, source: str) -> None:
    for key, (lowest, highest) in SCALE_LIMITS.items():
        value = getattr(scale, key)
        if value is not None and not lowest <= value <= highest:
            raise _fail(source, f"a number from {lowest:g} to {highest:g}", value, f"$.scale.{key}")
    low, high = scale.min_instances, scale.max_instances
    if low is not None and high is not None and low > high:
        raise _fail(source, f"`int` <= max_instances ({high})", low, "$.scale.min_instances")


def _check_permissions(permissions: Permissions, source: str) -> None:
    if isinstance(permissions.net, list):
        for index, target in enumerate(permissions.net):
            match = _NET_TARGET.fullmatch(target)
            if match is None or (match[2] != "*" and not 0 < int(match[2]) <= 65535):
                raise _fail(
                    source,
                    '"host:port" (port 1-65535, "*" for any host or port)',
                    target,
                    f"$.permissions.net[{index}]",
                )
    for field in ("read", "write"):
        for index, path in enumerate(getattr(permissions, field)):
            if not path.startswith("/") or "\0" in path:
                raise _fail(source, "an absolute path", path, f"$.permissions.{field}[{index}]")


def _name_env_key(data: bytes | str, message: str) -> str:
    """msgspec says `$.env[...]` for a bad value in the env table: name the key instead."""
    if not message.endswith("`$.env[...]`"):
        return message
    env = msgspec.toml.decode(data).get("env", {})
    for key, value in env.items():
        if not isinstance(value, str):
            return message.replace("`$.env[...]`", f"`$.env.{key}`")
    return message


def decode_manifest(data: bytes | str, source: str, default_name: str) -> Manifest:
    """Decode and check manifest text; `source` prefixes every error. Raises ManifestError."""
    try:
        manifest = msgspec.toml.decode(data, type=Manifest)
    except msgspec.ValidationError as exc:
        raise ManifestError(f"{source}: {_name_env_key(data, str(exc))}") from None
    except msgspec.DecodeError as exc:
        raise ManifestError(f"{source}: {exc}") from None
    if not manifest.name:
        manifest.name = default_name
    _check(manifest, source)
    return manifest


def load_manifest(directory: Path, default_name: str | None = None) -> Manifest:
    """Read `directory/edge.toml`; the name defaults to `default_name` or the directory's name.

    Raises ManifestError.
    """
    path = directory / MANIFEST_NAME
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ManifestError(f"{path}: cannot read the manifest: {exc.strerror}") from None
    return decode_manifest(data, str(path), default_name or directory.name)
