"""Node settings: embedded defaults, then a TOML file, then `EDGE_*` variables, then flags."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec

from cache import CacheSettings
from isolates.manifest import SCALE_LIMITS

__all__ = [
    "BudgetSettings",
    "NodeSettings",
    "ScaleSettings",
    "SettingsError",
    "load_settings",
    "read_token_file",
]


class SettingsError(ValueError):
    """Settings that cannot be used; the message names the source, the field and the bad value."""


DEFAULT_SCRUB = ("EDGE_*", "*TOKEN*", "*SECRET*", "*PASSWORD*", "*_KEY")
DEFAULT_PROTECTED = (".edge", "/var/lib/edge", "/etc/edge")


class ScaleSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """`[scale]`: what a function's manifest `[scale]` keys default to (docs/scaling.md)."""

    min_instances: int = 1
    max_instances: int = 4
    # In-flight requests per instance of an async or `threadsafe` handler (sync ones take 1).
    concurrency: int = 100
    # Treat sync handlers as thread-safe unless their manifest says otherwise: batches of requests
    # handed to one instance (less CPU per request under load, no spreading over instances).
    threadsafe: bool = False
    max_queue: int = 1000
    queue_timeout_ms: int = 10_000
    idle_timeout_s: float = 300.0


class BudgetSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """`[budget]`: the ceiling on instances of every function in one worker (0: none)."""

    max_instances: int = 4096
    memory_budget_mb: int = 0
    # What an interpreter instance counts against memory_budget_mb (a process one: its memory limit).
    interpreter_instance_mb: int = 24


class NodeSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """How an edge node runs. `config/node.toml` documents the same defaults."""

    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    # With workers = 1 and supervise false, the node serves from one process (edge/node/embedded.py);
    # true (or workers > 1): granian's main process supervises the worker processes.
    supervise: bool = False
    # "1" (HTTP/1.1 only, fastest), "2" (h2c prior knowledge only) or "auto" (both, sniffed per connection)
    http: str = "1"
    # Granian's interface to the node's app: "rsgi" (its native one, faster) or "asgi" (the reference).
    interface: str = "rsgi"
    functions: str = ""
    # Origin mode: sync functions from this origin (http://host:port) with a node token.
    origin: str = ""
    token: str = ""
    # Origin mode: a file holding the node token (read once at start; never put the token in argv).
    token_file: str = ""
    # The origin's ed25519 public key (base64); empty: trusted on first use and pinned in `data`.
    origin_key: str = ""
    # An https origin's certificate, or the CA that signed it (PEM); empty: the system's trust store.
    origin_ca: str = ""
    # Serve functions over HTTPS with this certificate and key (PEM); the admin listener stays plain.
    tls_cert: str = ""
    tls_key: str = ""
    # Where an origin-mode node keeps its id, the pinned key, bundles and its last applied state.
    data: str = ".edge/node"
    node_id: str = ""
    labels: dict[str, str] = {}
    poll_timeout_s: float = 25.0
    max_body_bytes: int = 10 * 1024 * 1024
    # Start every function's isolate at start-up (true) or on its first request (false).
    preload: bool = True
    # Blank isolates kept ready per worker, so a cold start skips creating an interpreter.
    warm_pool: int = 2
    warm_pool_max: int = 32
    # Standard-library modules imported into blank isolates ahead of need: each is held by every
    # instance (json ≈ 0.4-0.8 MiB), so none by default; a function imports what it uses.
    warm_imports: list[str] = msgspec.field(default_factory=list)
    log_level: str = "info"
    # One JSON line per request on the `edge.access` logger (at INFO: `log_level` above info hides it).
    access_log: bool = True
    # The admin listener of the node's main process: Prometheus `GET /metrics` (0: none).
    admin_host: str = "127.0.0.1"
    admin_port: int = 9180
    # How long an isolate may stay silent after a request's deadline before it is replaced.
    abandon_after_ms: int = 1000
    shutdown_timeout_ms: int = 5000
    # The response cache in front of the functions (`[cache]` in the file, EDGE_CACHE__MAX_BYTES, ...).
    cache: CacheSettings = msgspec.field(default_factory=CacheSettings)
    # Instances per function (`[scale]`, EDGE_SCALE__MAX_INSTANCES, ...) and the worker's budget.
    scale: ScaleSettings = msgspec.field(default_factory=ScaleSettings)
    budget: BudgetSettings = msgspec.field(default_factory=BudgetSettings)
    # Environment variables removed from the node process before any isolate exists (fnmatch).
    scrub_env: list[str] = msgspec.field(default_factory=lambda: list(DEFAULT_SCRUB))
    # Directories no function may open besides `data` (e.g. an origin's data directory on this host).
    protected_paths: list[str] = msgspec.field(default_factory=lambda: list(DEFAULT_PROTECTED))
    # Isolates stuck in C code a worker may leave behind before it is recycled (new worker first).
    max_abandoned_isolates: int = 8
    # A worker whose RSS passes this many MiB is recycled the same way (0: no ceiling).
    max_rss_mb: int = 0
    # Times a function may get stuck in C code (or crash its process) within 60 s before it is
    # marked failing and answers 503 until it is deployed again.
    max_function_failures: int = 3
    # Process isolation: default memory limit per child (MiB), CPU seconds per child, and the
    # first of the uids children run under when the node is root (one per function).
    process_memory_mb: int = 256
    process_cpu_s: int = 3600
    process_uid_base: int = 61000


_LEVELS = ("critical", "error", "warning", "info", "debug")


def _check(settings: NodeSettings, source: str) -> None:
    problems = (
        ("port", settings.port, 0 <= settings.port <= 65535, "`int` from 0 to 65535"),
        (
            "admin_port",
            settings.admin_port,
            0 <= settings.admin_port <= 65535 and (settings.admin_port != settings.port or not settings.port),
            f"`int` from 0 to 65535 other than `port` ({settings.port}); 0 turns the admin listener off",
        ),
        ("admin_host", settings.admin_host, bool(settings.admin_host), "an address, e.g. 127.0.0.1"),
        ("workers", settings.workers, 1 <= settings.workers <= 256, "`int` from 1 to 256"),
        ("max_body_bytes", settings.max_body_bytes, settings.max_body_bytes >= 0, "`int` >= 0"),
        ("http", settings.http, settings.http in ("1", "2", "auto"), "one of 1, 2, auto"),
        ("interface", settings.interface, settings.interface in ("rsgi", "asgi"), "one of rsgi, asgi"),
        ("log_level", settings.log_level, settings.log_level in _LEVELS, f"one of {', '.join(_LEVELS)}"),
        (
            "poll_timeout_s",
            settings.poll_timeout_s,
            1 <= settings.poll_timeout_s <= 60,
            "a number from 1 to 60",
        ),
        ("warm_pool", settings.warm_pool, 0 <= settings.warm_pool <= 64, "`int` from 0 to 64"),
        (
            "warm_pool_max",
            settings.warm_pool_max,
            settings.warm_pool <= settings.warm_pool_max <= 1024,
            f"`int` from warm_pool ({settings.warm_pool}) to 1024",
        ),
        ("abandon_after_ms", settings.abandon_after_ms, settings.abandon_after_ms > 0, "`int` > 0"),
        ("shutdown_timeout_ms", settings.shutdown_timeout_ms, settings.shutdown_timeout_ms > 0, "`int` > 0"),
        (
            "max_abandoned_isolates",
            settings.max_abandoned_isolates,
            settings.max_abandoned_isolates >= 1,
            "`int` >= 1",
        ),
        ("max_rss_mb", settings.max_rss_mb, settings.max_rss_mb >= 0, "`int` >= 0 (0: no ceiling)"),
        (
            "max_function_failures",
            settings.max_function_failures,
            settings.max_function_failures >= 1,
            "`int` >= 1",
        ),
        ("process_memory_mb", settings.process_memory_mb, settings.process_memory_mb >= 16, "`int` >= 16"),
        ("process_cpu_s", settings.process_cpu_s, settings.process_cpu_s >= 1, "`int` >= 1"),
        (
            "process_uid_base",
            settings.process_uid_base,
            1000 <= settings.process_uid_base <= 2**31 - 100_000,
            "`int` from 1000 to 2147383648",
        ),
    )
    for field, value, ok, expected in problems:
        if not ok:
            raise SettingsError(f"{source}: Expected {expected}, got {value!r} - at `$.{field}`")
    _check_scale(settings, source)


def _check_scale(settings: NodeSettings, source: str) -> None:
    scale, budget = settings.scale, settings.budget
    for key, (lowest, highest) in SCALE_LIMITS.items():
        value = getattr(scale, key)
        if not lowest <= value <= highest:
            expected = f"a number from {lowest:g} to {highest:g}"
            raise SettingsError(f"{source}: Expected {expected}, got {value!r} - at `$.scale.{key}`")
    if scale.min_instances > scale.max_instances:
        raise SettingsError(
            f"{source}: Expected `int` <= scale.max_instances ({scale.max_instances}), got"
            f" {scale.min_instances!r} - at `$.scale.min_instances`"
        )
    for key in ("max_instances", "memory_budget_mb", "interpreter_instance_mb"):
        value = getattr(budget, key)
        if value < 0:
            raise SettingsError(
                f"{source}: Expected `int` >= 0 (0: no ceiling), got {value!r} - at `$.budget.{key}`"
            )


def _nested_path(message: str) -> str:
    """`... - at `$.max_bytes` - at `$.cache`` (a check inside a nested struct) -> `$.cache.max_bytes`."""
    match = re.fullmatch(r"(.*) - at `\$\.(.+?)` - at `\$\.(.+?)`", message, re.S)
    return f"{match[1]} - at `$.{match[3]}.{match[2]}`" if match else message


def _field_types() -> dict[str, Any]:
    return {field.name: field.type for field in msgspec.structs.fields(NodeSettings)}


def _convert(variable: str, raw: str, kind: Any) -> Any:
    value: Any = raw
    if kind == list[str]:
        value = [item for item in raw.split(",") if item]
    elif kind == dict[str, str]:
        value = dict(item.partition("=")[::2] for item in raw.split(",") if item)
    try:
        return msgspec.convert(value, kind, strict=False)
    except msgspec.ValidationError as exc:
        raise SettingsError(f"environment variable {variable}={raw!r}: {exc}") from None


def _nested_from_environment[T: msgspec.Struct](table: str, current: T, environ: Mapping[str, str]) -> T:
    """`current` with the fields set by `EDGE_<TABLE>__<FIELD>` variables (e.g. EDGE_CACHE__MAX_BYTES)."""
    changes = {}
    for field in msgspec.structs.fields(type(current)):
        variable = f"EDGE_{table.upper()}__{field.name.upper()}"
        if variable in environ:
            changes[field.name] = _convert(variable, environ[variable], field.type)
    if not changes:
        return current
    try:
        return msgspec.convert({**msgspec.structs.asdict(current), **changes}, type(current))
    except msgspec.ValidationError as exc:
        raise SettingsError(f"environment: {exc}".replace("`$.", f"`$.{table}.")) from None


def _one_token_source(layer: dict[str, Any], source: str) -> dict[str, Any]:
    """A layer that sets `token` or `token_file` replaces both: the later layer's choice wins."""
    given = [name for name in ("token", "token_file") if layer.get(name)]
    if len(given) == 2:
        raise SettingsError(
            f"{source}: Expected either `token` or `token_file`, got both - at `$.token` and `$.token_file`"
        )
    if given:
        other = "token_file" if given[0] == "token" else "token"
        return {**layer, other: ""}
    return layer


def read_token_file(settings: NodeSettings) -> NodeSettings:
    """`settings` with `token` read from `token_file` (when set); raises SettingsError naming the file."""
    if not settings.token_file:
        return settings
    path = Path(settings.token_file)
    try:
        token = path.read_text().strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise SettingsError(f"{path}: cannot read the node token: {reason} - at `$.token_file`") from None
    if not token or any(char.isspace() for char in token):
        raise SettingsError(f"{path}: Expected one node token on one line, got {len(token)} characters")
    return msgspec.structs.replace(settings, token=token)


def load_settings(
    file: Path | None = None,
    environ: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
) -> NodeSettings:
    """Merge the layers in order (later wins); raises SettingsError naming the layer at fault."""
    settings = NodeSettings()
    if file is not None:
        try:
            settings = msgspec.toml.decode(file.read_bytes(), type=NodeSettings)
        except OSError as exc:
            raise SettingsError(f"{file}: cannot read the settings: {exc.strerror}") from None
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            raise SettingsError(f"{file}: {_nested_path(str(exc))}") from None
        _check(settings, str(file))
        _one_token_source(msgspec.structs.asdict(settings), str(file))
    changes: dict[str, Any] = {}
    for name, kind in _field_types().items():
        if name in ("cache", "scale", "budget"):
            changes[name] = _nested_from_environment(name, getattr(settings, name), environ or {})
            continue
        variable = f"EDGE_{name.upper()}"
        raw = (environ or {}).get(variable)
        if raw is not None:
            changes[name] = _convert(variable, raw, kind)
    changes = _one_token_source(changes, "environment")
    settings = msgspec.structs.replace(settings, **changes)
    _check(settings, "environment")
    flag_values = {k: v for k, v in (flags or {}).items() if v is not None}
    flag_values = _one_token_source(flag_values, "command line")
    settings = msgspec.structs.replace(settings, **flag_values)
    _check(settings, "command line")
    return settings
