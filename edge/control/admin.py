"""Messages of the admin API that `edge deploy`, `edge ls` and friends use; JSON on the wire."""

from __future__ import annotations

import msgspec

from edge.control.messages import NodeInfo, NodeReport, PurgeKind, Release

__all__ = [
    "FunctionDetail",
    "FunctionInfo",
    "Health",
    "NewToken",
    "NodeStatus",
    "NodesList",
    "PurgeRequest",
    "PurgeResult",
    "ReleaseResult",
    "Removed",
    "RollbackRequest",
    "TokenInfo",
    "TokenRequest",
    "VersionInfo",
]


class Health(msgspec.Struct, kw_only=True):
    """`GET /v1/health`: the only route without auth."""

    status: str
    revision: int


class FunctionInfo(msgspec.Struct, kw_only=True):
    """One line of `edge ls`."""

    name: str
    releases: list[Release]
    routes: list[str]
    versions: int
    updated_at: float
    # Version -> the ids of the nodes that reported it failing to load.
    failed: dict[str, list[str]] = {}


class VersionInfo(msgspec.Struct, kw_only=True):
    """One kept version of a function; `weight` is its current share of the traffic."""

    version: str
    created_at: float
    size: int
    weight: int
    # The ids of the nodes that reported this version failing to load.
    failed_on: list[str] = []


class FunctionDetail(msgspec.Struct, kw_only=True):
    """`GET /v1/functions/<name>`: the releases and every kept version, newest first."""

    name: str
    releases: list[Release]
    routes: list[str]
    timeout_ms: int
    cache_ttl: int
    versions: list[VersionInfo]
    updated_at: float


class ReleaseResult(msgspec.Struct, kw_only=True):
    """The answer to deploy, promote and rollback: the releases now live and at which revision."""

    name: str
    version: str
    revision: int
    releases: list[Release]
    # Routes a forced deploy took from other functions, e.g. "/hello from `hello`".
    took: list[str] = []


class RollbackRequest(msgspec.Struct, kw_only=True):
    """`POST /v1/functions/<name>/rollback`: `to` is a version digest or a unique prefix of one."""

    to: str | None = None


class Removed(msgspec.Struct, kw_only=True):
    """The answer to `DELETE /v1/functions/<name>`."""

    name: str
    revision: int


class PurgeRequest(msgspec.Struct, kw_only=True):
    """`POST /v1/functions/<name>/purges`."""

    kind: PurgeKind
    value: str = ""


class PurgeResult(msgspec.Struct, kw_only=True):
    """The stored purge order and the revision that carries it."""

    id: int
    function: str
    kind: PurgeKind
    value: str
    revision: int


class NodeStatus(msgspec.Struct, kw_only=True):
    """One node as the origin knows it: what it sent, when it was seen and its last report."""

    info: NodeInfo
    registered_at: float
    last_seen: float
    live: bool
    report: NodeReport | None = None


class NodesList(msgspec.Struct, kw_only=True):
    """`GET /v1/nodes`."""

    revision: int
    heartbeat_interval_s: float
    nodes: list[NodeStatus]
    # The origin's clock when it answered: `now - last_seen` is how long ago a node was seen.
    now: float = 0.0


class TokenInfo(msgspec.Struct, kw_only=True):
    """One token as `edge origin token ls` shows it: its public id, never the token."""

    # The first 12 hex digits of the token's sha256.
    id: str
    role: str
    created_at: float
    # The node id the token is bound to (`--node`), or None.
    node_id: str | None = None
    # The ids of the nodes that registered with this token (they belong to it).
    nodes: list[str] = []
    expires_at: float | None = None
    # Written at most once a minute per token.
    last_used: float | None = None
    revoked_at: float | None = None


class TokenRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """`POST /v1/tokens`: a new token's role, lifetime (None: no expiry) and node binding."""

    role: str
    expires_in_s: float | None = None
    node_id: str | None = None


class NewToken(msgspec.Struct, kw_only=True):
    """The answer to `POST /v1/tokens`: the token (shown this once) and what is stored about it."""

    token: str
    info: TokenInfo
