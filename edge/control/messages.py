"""Messages between a node and the origin (spec: docs/spec/CONTROL.md); JSON on the wire."""

from __future__ import annotations

from typing import Literal

import msgspec

__all__ = [
    "PROTOCOL_VERSION",
    "DesiredState",
    "ErrorBody",
    "FunctionState",
    "FunctionStatus",
    "Interface",
    "NodeInfo",
    "NodeReport",
    "NodeSecrets",
    "PublicKey",
    "PurgeKind",
    "PurgeOrder",
    "Registered",
    "Release",
    "SealedSecrets",
    "SignedState",
]

PROTOCOL_VERSION = 1

PurgeKind = Literal["path", "prefix", "tag", "all"]


class Interface(msgspec.Struct, kw_only=True):
    """One network interface of a node and its addresses (as the node sees them)."""

    name: str
    addresses: list[str] = []


class NodeInfo(msgspec.Struct, kw_only=True):
    """`POST /v1/nodes/register`: who a node is; the node chooses and persists its id."""

    node_id: str
    hostname: str
    arch: str
    python: str
    cpus: int
    memory_bytes: int
    interfaces: list[Interface] = []
    labels: dict[str, str] = {}
    # The node's X25519 public key (base64 of the raw 32 bytes): secrets are sealed to it.
    public_key: str = ""


class Registered(msgspec.Struct, kw_only=True):
    """The answer to a registration: how often the node should report."""

    node_id: str
    heartbeat_interval_s: float


class PublicKey(msgspec.Struct, kw_only=True):
    """`GET /v1/key`: the origin's ed25519 public key, base64 of the raw 32 bytes."""

    public_key: str


class Release(msgspec.Struct, kw_only=True):
    """One version of a function and its share of the traffic in percent."""

    version: str
    weight: int


class FunctionState(msgspec.Struct, kw_only=True):
    """What a node should run for one function; the first release is the stable one."""

    name: str
    routes: list[str]
    timeout_ms: int
    env: dict[str, str]
    cache_ttl: int
    releases: list[Release]
    # `[auth] jwks_url` -> the key set the origin fetched from it (nodes never fetch keys).
    jwks: dict[str, str] = {}
    # The names of the function's secrets (never values: those come sealed, see SealedSecrets).
    secrets: list[str] = []


class PurgeOrder(msgspec.Struct, kw_only=True):
    """An edge-cache purge; ids increase, nodes apply each order once."""

    id: int
    function: str
    kind: PurgeKind
    value: str = ""


class DesiredState(msgspec.Struct, kw_only=True):
    """Everything a node should run at one revision; signed as a whole by the origin."""

    revision: int
    issued_at: float
    functions: list[FunctionState]
    purges: list[PurgeOrder]


class NodeSecrets(msgspec.Struct, kw_only=True):
    """What a sealed box holds: every function's secrets (name -> key -> value) for one node at
    one revision."""

    node_id: str
    revision: int
    functions: dict[str, dict[str, str]] = {}


class SealedSecrets(msgspec.Struct, kw_only=True):
    """A `NodeSecrets` sealed to one node's public key (base64 `box`) and the origin's ed25519
    signature over the sealed bytes (edge/control/sealing.py)."""

    node_id: str
    box: str
    signature: str


class SignedState(msgspec.Struct, kw_only=True):
    """`GET /v1/sync`: base64 of the JSON DesiredState bytes, its ed25519 signature and the key;
    with `node_id` of a node with a registered key, that node's secrets, sealed to it."""

    payload: str
    signature: str
    key: str
    secrets: SealedSecrets | None = None


class FunctionStatus(msgspec.Struct, kw_only=True):
    """How one function is doing on a node; `versions` are those it serves or tried to load."""

    name: str
    versions: list[str] = []
    state: str = "serving"
    error: str | None = None


class FunctionStats(msgspec.Struct, kw_only=True):
    """Traffic of one function version on one node (every worker): cumulative counters since the
    node started, and figures over about the last minute (for the origin's dashboard)."""

    name: str
    version: str
    requests: int = 0
    # 5xx answers, 4xx answers, 504s (timeouts), requests that had to start an isolate.
    errors: int = 0
    client_errors: int = 0
    timeouts: int = 0
    cold_starts: int = 0
    # The last minute: requests per second, the share of them answered 5xx, latency percentiles.
    rps: float = 0.0
    error_rate: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0


class NodeReport(msgspec.Struct, kw_only=True):
    """`POST /v1/nodes/<id>/report`: the heartbeat with what a node has applied."""

    node_id: str
    applied_revision: int
    applied_purge_id: int = 0
    functions: list[FunctionStatus] = []
    errors: list[str] = []
    stats: list[FunctionStats] = []


class LogLine(msgspec.Struct, kw_only=True):
    """One line a function printed (stream stdout, stderr or error) or one access-log line
    (stream "access", the line a JSON object), as shipped from a node to the origin."""

    time: float
    function: str
    version: str = ""
    stream: str = "stdout"
    request_id: str = ""
    line: str
    trace_id: str = ""
    # Set by the origin from the URL the batch came to, not trusted from the node.
    node_id: str = ""


class LogBatch(msgspec.Struct, kw_only=True):
    """`POST /v1/nodes/<id>/logs`: lines a node's worker collected since its last batch, and how
    many it had to drop (its buffer was full while the origin could not be reached)."""

    lines: list[LogLine] = []
    dropped: int = 0


class LogPage(msgspec.Struct, kw_only=True):
    """`GET /v1/logs`: lines after a cursor, the cursor to ask from next, and lines dropped so
    far per node (on the node, before they reached the origin, or by the origin's bound)."""

    lines: list[LogLine] = []
    next: int = 0
    dropped: dict[str, int] = {}


class ErrorBody(msgspec.Struct, kw_only=True):
    """Every 4xx/5xx answer: what went wrong, for a person."""

    error: str
