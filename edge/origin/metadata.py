"""The seam for the origin's metadata: one `MetadataStore` contract, SQLite or PostgreSQL behind it.

`open_metadata(url, data_root)` picks the implementation by the URL's scheme from `STORES`; the
contract test suite (tests/origin/test_store_contract.py) runs against every one of them.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Protocol

from edge.control.messages import NodeInfo, NodeReport, PurgeKind, PurgeOrder
from edge.origin.store import FunctionRecord, NodeRecord, SecretRecord, Store, TokenRecord, VersionRecord

__all__ = ["STORES", "DatabaseError", "MetadataStore", "check_database", "database_label", "open_metadata"]


class DatabaseError(ValueError):
    """A `--database` value that names no usable database; the message says what to pass instead."""


class MetadataStore(Protocol):
    """Tokens, functions, versions, purges, nodes, failures, key sets, secrets and the revision.

    Every write happens inside `transaction()`; transactions of every origin on one database run
    one at a time, so a read-check-write inside one sees no other origin's half-done change.
    """

    def close(self) -> None:
        """Called at shutdown; stops `listen`'s watcher too."""

    def transaction(self) -> AbstractContextManager[None]:
        """Group writes; committed together on success, rolled back on any exception."""

    def listen(self, changed: Callable[[], None]) -> None:
        """Called once at start-up: from then on `changed()` runs (on any thread) after another
        origin on this database committed a revision bump (and whenever a bump may have been
        missed); a no-op where only one origin can run."""

    def pin(self, name: str, value: str) -> str:
        """Store `value` under `name` unless a value is stored already; returns the stored one."""

    def revision(self) -> int:
        """The current global revision."""

    def bump(self) -> int:
        """Called inside a transaction: the revision plus one, stored and returned."""

    def add_token(
        self,
        token_hash: str,
        role: str,
        now: float,
        expires_at: float | None = None,
        node_id: str | None = None,
    ) -> None:
        """Store a token's hash with its role, expiry and the node it is bound to."""

    def token(self, token_hash: str) -> TokenRecord | None:
        """The token with this hash, or None."""

    def tokens(self, id_prefix: str = "") -> list[TokenRecord]:
        """Every token (whose hash starts with `id_prefix`), oldest first."""

    def count_tokens(self, role: str) -> int:
        """How many tokens have this role (revoked and expired ones included)."""

    def revoke_token(self, token_hash: str, now: float) -> None:
        """Mark a token revoked at `now`."""

    def token_used(self, token_hash: str, now: float) -> None:
        """Record when a token was last used (no revision bump)."""

    def node_token(self, node_id: str) -> str | None:
        """The hash of the token node `node_id` belongs to, or None."""

    def token_nodes(self) -> dict[str, list[str]]:
        """Token hash -> the ids of the nodes that belong to it, sorted."""

    def function(self, name: str) -> FunctionRecord | None:
        """The function called `name`, or None."""

    def functions(self) -> list[FunctionRecord]:
        """Every function, by name."""

    def put_function(self, record: FunctionRecord) -> None:
        """Insert or replace a function."""

    def delete_function(self, name: str) -> None:
        """Delete a function with its versions, failures and secrets."""

    def version(self, name: str, version: str) -> VersionRecord | None:
        """One version of a function, or None."""

    def versions(self, name: str) -> list[VersionRecord]:
        """Every kept version of a function, newest first (a re-upload counts as new)."""

    def put_version(self, record: VersionRecord) -> None:
        """Insert or replace a version (a re-upload refreshes its creation time)."""

    def delete_versions(self, name: str, versions: list[str]) -> None:
        """Forget these versions of a function."""

    def last_deploys(self) -> dict[str, float]:
        """Each function's newest upload time."""

    def referenced_blobs(self) -> set[str]:
        """Every digest some kept version still refers to."""

    def put_jwks(self, url: str, body: str, now: float) -> None:
        """Store the key set fetched from `url`."""

    def jwks(self) -> dict[str, str]:
        """Every stored key set by URL."""

    def add_purge(self, function: str, kind: PurgeKind, value: str, now: float) -> int:
        """Store a purge order and return its id (ids only grow)."""

    def purges(self) -> list[PurgeOrder]:
        """Every kept purge order, oldest first."""

    def prune_purges(self, keep: int, older_than: float) -> None:
        """Drop orders both outside the newest `keep` and older than `older_than`."""

    def put_node(self, info: NodeInfo, now: float, token_hash: str | None = None) -> None:
        """Register a node or update what it sent, keeping its first registration time and report."""

    def touch_node(
        self, node_id: str, now: float, report: NodeReport | None = None, token_hash: str | None = None
    ) -> bool:
        """Mark a node seen (storing its report); False when it is not registered."""

    def note_failures(self, report: NodeReport, now: float) -> None:
        """Remember the versions a report says failed to load; forget those it now serves."""

    def failures(self, name: str | None = None) -> dict[tuple[str, str], list[str]]:
        """(function, version) -> the ids of the nodes where it failed."""

    def nodes(self) -> list[NodeRecord]:
        """Every registered node, by id."""

    def node(self, node_id: str) -> NodeRecord | None:
        """One registered node, or None."""

    def set_node_info(self, info: NodeInfo) -> None:
        """Replace what a registered node sent, leaving its times."""

    def put_secret(self, record: SecretRecord) -> None:
        """Insert or replace one secret of a function."""

    def delete_secret(self, function: str, key: str) -> bool:
        """Delete one secret; False when there was none."""

    def secrets(self, function: str | None = None) -> list[SecretRecord]:
        """The secrets of one function, or of all, by function and key."""


def _sqlite(url: str, data_root: Path) -> MetadataStore:
    return Store(data_root / "origin.db")


def _postgres(url: str, data_root: Path) -> MetadataStore:
    try:
        from edge.origin.pgstore import PostgresStore
    except ModuleNotFoundError as exc:
        if exc.name is None or not exc.name.startswith("psycopg"):
            raise
        raise DatabaseError(
            f"--database {database_label(url)}: the PostgreSQL driver is not installed;"
            " install it with `pip install 'edge-functions[postgres]'`"
        ) from None

    return PostgresStore(url)


# URL scheme -> how to open it; "" is the embedded default, `DATA/origin.db`.
STORES: dict[str, Callable[[str, Path], MetadataStore]] = {
    "": _sqlite,
    "postgresql": _postgres,
    "postgres": _postgres,
}


def check_database(url: str) -> str:
    """`url` when it can name a database; raises DatabaseError saying what is expected."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in STORES or (parts.scheme == "" and url):
        raise DatabaseError(
            f"--database: Expected postgresql://[user@]host[:port]/dbname (or nothing, for SQLite in"
            f" the data directory), got {url!r}"
        )
    if parts.password is not None:
        raise DatabaseError(
            "--database: Expected a URL without a password (an argument is visible to every user"
            f" of this machine), got one for {database_label(url)}; put the password in a"
            " PostgreSQL password file (~/.pgpass, or the file PGPASSFILE names) instead"
        )
    return url


def database_label(url: str) -> str:
    """The URL as it may be shown (a password, should one be in it, replaced by ***)."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def open_metadata(url: str, data_root: Path) -> MetadataStore:
    """Open the store `url` names (SQLite in `data_root` for ""); raises DatabaseError for a bad
    URL and the driver's error when the database cannot be reached."""
    check_database(url)
    return STORES[urllib.parse.urlsplit(url).scheme](url, data_root)
