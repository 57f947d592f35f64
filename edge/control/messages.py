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
    "PublicKey",
    "PurgeKind",
    "PurgeOrder",
    "Registered",
    "Release",
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


class SignedState(msgspec.Struct, kw_only=True):
    """`GET /v1/sync`: base64 of the JSON DesiredState bytes, its ed25519 signature and the key."""

    payload: str
    signature: str
    key: str


class FunctionStatus(msgspec.Struct, kw_only=True):
    """How one function is doing on a node; `versions` are those it serves or tried to load."""

    name: str
    versions: list[str] = []
    state: str = "serving"
    error: str | None = None


class NodeReport(msgspec.Struct, kw_only=True):
    """`POST /v1/nodes/<id>/report`: the heartbeat with what a node has applied."""

    node_id: str
    applied_revision: int
    applied_purge_id: int = 0
    functions: list[FunctionStatus] = []
    errors: list[str] = []


class ErrorBody(msgspec.Struct, kw_only=True):
    """Every 4xx/5xx answer: what went wrong, for a person."""

    error: str
