"""Access tokens: minting, listing, revoking, checking a bearer token, node binding, last use.

A token is stored as its sha256 hash; its public id is the first 12 hex digits of that hash
(shown by `edge origin token create` and `ls`, never the token). A token is refused (401) once
it is revoked or past `expires_at`, from its next request on. A node token created with `--node ID`
may only act as node ID (and `ID-<pid>`, the per-worker ids of a node with several workers); any
node token makes the node ids it registers its own: another token cannot register or report as
them (403) while that token is valid. Last use is written at most once a minute per token.
Used by the origin's HTTP app (`authenticate`, `check_node`) and by `edge origin token` working
on a data directory; raises `ApiError` with the status the API answers.
"""

from __future__ import annotations

import re
import weakref
from datetime import UTC, datetime

from edge.control.admin import NewToken, TokenInfo
from edge.origin.datadir import ROLES, hash_token, new_token
from edge.origin.metadata import MetadataStore
from edge.origin.service import ApiError, Origin
from edge.origin.store import TokenRecord

__all__ = [
    "LAST_USE_EVERY_S",
    "MAX_LIFETIME_S",
    "authenticate",
    "check_node",
    "create",
    "listing",
    "problem",
    "recheck",
    "revoke",
    "valid",
]

# A token's `last_used` is written when the stored value is at least this old: a node's long polls
# and reports do not each cost a write.
LAST_USE_EVERY_S = 60.0
# The longest lifetime a token can be given (none at all: leave the expiry out).
MAX_LIFETIME_S = 10 * 365 * 86400.0
_ID = re.compile(r"[0-9a-f]{12}")
_NODE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def _when(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def problem(record: TokenRecord, now: float) -> str | None:
    """Why this token is refused (revoked, expired), or None when it is valid."""
    if record.revoked_at is not None:
        return f"bearer token {record.id} was revoked at {_when(record.revoked_at)}"
    if record.expires_at is not None and now >= record.expires_at:
        return f"bearer token {record.id} expired at {_when(record.expires_at)}"
    return None


def valid(record: TokenRecord | None, now: float) -> bool:
    """True for a stored token that is neither revoked nor expired."""
    return record is not None and problem(record, now) is None


def _info(record: TokenRecord, nodes: dict[str, list[str]]) -> TokenInfo:
    return TokenInfo(
        id=record.id,
        role=record.role,
        node_id=record.node_id,
        nodes=nodes.get(record.hash, []),
        created_at=record.created_at,
        expires_at=record.expires_at,
        last_used=record.last_used,
        revoked_at=record.revoked_at,
    )


def create(
    store: MetadataStore, role: str, now: float, expires_in_s: float | None = None, node_id: str | None = None
) -> NewToken:
    """Mint a token; raises ApiError 400 naming the bad field."""
    if role not in ROLES:
        raise ApiError(400, f"request body: Expected `$.role` one of {', '.join(ROLES)}, got {role!r}")
    if expires_in_s is not None and not 0 < expires_in_s <= MAX_LIFETIME_S:
        raise ApiError(
            400,
            f"request body: Expected `$.expires_in_s` from 0 to {MAX_LIFETIME_S:.0f} seconds (10 years),"
            f" got {expires_in_s!r}",
        )
    if node_id is not None:
        if role != "node":
            raise ApiError(400, f"request body: Expected `$.node_id` only with role node, got role {role!r}")
        if not _NODE_ID.fullmatch(node_id):
            raise ApiError(
                400,
                "request body: Expected `$.node_id` of 1-128 letters, digits, '.', '_' or '-' (not first),"
                f" got {node_id!r}",
            )
    expires_at = None if expires_in_s is None else now + expires_in_s
    token = new_token(store, role, now, expires_at, node_id)
    record = TokenRecord(
        hash=hash_token(token), role=role, created_at=now, node_id=node_id, expires_at=expires_at
    )
    return NewToken(token=token, info=_info(record, {}))


def listing(store: MetadataStore) -> list[TokenInfo]:
    """Every token, oldest first, with the nodes that belong to it."""
    nodes = store.token_nodes()
    return [_info(record, nodes) for record in store.tokens()]


def revoke(store: MetadataStore, token_id: str, now: float) -> TokenInfo:
    """Revoke the token with this id; raises ApiError 400 (bad id), 404 (none), 409 (already revoked,
    or the last valid admin token)."""
    if not _ID.fullmatch(token_id):
        raise ApiError(
            400,
            f"token id: Expected 12 lowercase hex digits as `edge origin token ls` shows, got {token_id!r}",
        )
    with store.transaction():
        found = store.tokens(token_id)
        if not found:
            raise ApiError(404, f"no token with id {token_id}; `edge origin token ls` lists them")
        if len(found) > 1:  # 48 bits of a sha256: two tokens would have to be astronomically unlucky
            raise ApiError(409, f"{len(found)} tokens have the id {token_id}; revoke them in the database")
        record = found[0]
        if record.role == "admin" and record.revoked_at is None and valid(record, now):
            others = [t for t in store.tokens() if t.role == "admin" and t.hash != record.hash]
            if not any(valid(other, now) for other in others):
                raise ApiError(
                    409,
                    f"token {token_id} is the last valid admin token; create another first"
                    " (`edge origin token create --role admin`)",
                )
        if record.revoked_at is not None:
            raise ApiError(409, f"token {token_id} was already revoked at {_when(record.revoked_at)}")
        store.revoke_token(record.hash, now)
        record.revoked_at = now
    return _info(record, store.token_nodes())


_LAST_WRITTEN: weakref.WeakKeyDictionary[Origin, dict[str, float]] = weakref.WeakKeyDictionary()


def authenticate(origin: Origin, token: str) -> TokenRecord:
    """The stored token for a bearer token; raises ApiError 401 when unknown, revoked or expired.

    Records the use (at most one write a minute per token).
    """
    record = _still_valid(origin, hash_token(token))
    now = origin.clock()
    written = _LAST_WRITTEN.setdefault(origin, {})
    if now - written.get(record.hash, -LAST_USE_EVERY_S) >= LAST_USE_EVERY_S:
        written[record.hash] = now
        origin.store.token_used(record.hash, now)
    return record


def recheck(origin: Origin, record: TokenRecord) -> None:
    """Raise ApiError 401 when the token was revoked, expired or deleted since it was checked."""
    _still_valid(origin, record.hash)


def _still_valid(origin: Origin, token_hash: str) -> TokenRecord:
    record = origin.store.token(token_hash)
    if record is None:
        raise ApiError(401, "unknown bearer token")
    refused = problem(record, origin.clock())
    if refused is not None:
        fix = f"create a new one with `edge origin token create --role {record.role}`"
        raise ApiError(401, f"{refused}; {fix}")
    return record


def _acts_as(bound: str, node_id: str) -> bool:
    """A token bound to `bound` may be node `bound` and its workers `bound-<pid>`."""
    return node_id == bound or (node_id.startswith(f"{bound}-") and node_id[len(bound) + 1 :].isdigit())


def check_node(origin: Origin, record: TokenRecord | None, node_id: str) -> str | None:
    """May this token register, report or poll as `node_id`? Raises ApiError 403 when not.

    Returns the hash the node is to belong to (a node token's), or None for an admin token.
    """
    if record is None or record.role != "node":
        return None
    if record.node_id is not None and not _acts_as(record.node_id, node_id):
        raise ApiError(
            403,
            f"node token {record.id} is bound to node `{record.node_id}`; it cannot act as node"
            f" `{node_id}`: give that node its own token"
            f" (`edge origin token create --role node --node {node_id}`)",
        )
    owner = origin.store.node_token(node_id)
    if owner is None or owner == record.hash:
        return record.hash
    other = origin.store.token(owner)
    if not valid(other, origin.clock()):  # revoked, expired or deleted: this token takes the id
        return record.hash
    raise ApiError(
        403,
        f"node `{node_id}` belongs to token {owner[:12]}, the token that registered it;"
        f" this is token {record.id}: start that node with its own token, or revoke"
        f" {owner[:12]} (`edge origin token revoke {owner[:12]}`) so another token can take the id",
    )
