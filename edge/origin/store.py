"""The origin's metadata in SQLite: tokens, functions, versions, purge orders, nodes, the revision,
which node reported which version failing to load, and functions' secrets (encrypted by the caller)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import msgspec

from edge.control.messages import NodeInfo, NodeReport, PurgeKind, PurgeOrder, Release
from isolates.manifest import Manifest

__all__ = ["FunctionRecord", "NodeRecord", "SecretRecord", "Store", "TokenRecord", "VersionRecord"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS tokens (
    hash TEXT PRIMARY KEY, role TEXT NOT NULL, created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS functions (
    name TEXT PRIMARY KEY, releases TEXT NOT NULL, history TEXT NOT NULL,
    created_at REAL NOT NULL, updated_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS versions (
    name TEXT NOT NULL, version TEXT NOT NULL, created_at REAL NOT NULL, size INTEGER NOT NULL,
    manifest TEXT NOT NULL, PRIMARY KEY (name, version));
CREATE TABLE IF NOT EXISTS purges (
    id INTEGER PRIMARY KEY AUTOINCREMENT, function TEXT NOT NULL, kind TEXT NOT NULL,
    value TEXT NOT NULL, created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS nodes (
    node_id TEXT PRIMARY KEY, info TEXT NOT NULL, registered_at REAL NOT NULL,
    last_seen REAL NOT NULL, report TEXT);
CREATE TABLE IF NOT EXISTS failures (
    name TEXT NOT NULL, version TEXT NOT NULL, node_id TEXT NOT NULL, error TEXT NOT NULL,
    at REAL NOT NULL, PRIMARY KEY (name, version, node_id));
CREATE TABLE IF NOT EXISTS jwks (
    url TEXT PRIMARY KEY, body TEXT NOT NULL, fetched_at REAL NOT NULL);
INSERT OR IGNORE INTO meta (key, value) VALUES ('revision', 0);
CREATE TABLE IF NOT EXISTS secrets (
    function TEXT NOT NULL, key TEXT NOT NULL, sealed BLOB NOT NULL, size INTEGER NOT NULL,
    updated_at REAL NOT NULL, PRIMARY KEY (function, key));
CREATE TABLE IF NOT EXISTS pins (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
# Columns added after the first release: (table, column, type), added to older databases on open.
_ADDED_COLUMNS = (
    ("tokens", "node_id", "TEXT"),
    ("tokens", "expires_at", "REAL"),
    ("tokens", "last_used", "REAL"),
    ("tokens", "revoked_at", "REAL"),
    ("nodes", "token_hash", "TEXT"),
)
_TOKEN_COLUMNS = "hash, role, created_at, node_id, expires_at, last_used, revoked_at"


class FunctionRecord(msgspec.Struct, kw_only=True):
    """A function's releases (first is stable) and the stack of versions that were stable."""

    name: str
    releases: list[Release]
    history: list[str]
    created_at: float
    updated_at: float


class VersionRecord(msgspec.Struct, kw_only=True):
    """One uploaded version of a function and the manifest it carried."""

    name: str
    version: str
    created_at: float
    size: int
    manifest: Manifest


class SecretRecord(msgspec.Struct, kw_only=True):
    """One secret of a function: `sealed` is its value encrypted at rest, `size` the value's bytes."""

    function: str
    key: str
    sealed: bytes
    size: int
    updated_at: float


class TokenRecord(msgspec.Struct, kw_only=True):
    """A stored token (its hash, never the token), its role, node binding, expiry, use and revocation."""

    hash: str
    role: str
    created_at: float
    node_id: str | None = None
    expires_at: float | None = None
    last_used: float | None = None
    revoked_at: float | None = None

    @property
    def id(self) -> str:
        """The public id: the first 12 hex digits of the hash (says nothing about the token)."""
        return self.hash[:12]


class NodeRecord(msgspec.Struct, kw_only=True):
    """A registered node and its last report."""

    info: NodeInfo
    registered_at: float
    last_seen: float
    report: NodeReport | None


_json = msgspec.json.encode
_releases = msgspec.json.Decoder(list[Release])
_history = msgspec.json.Decoder(list[str])
_manifest = msgspec.json.Decoder(Manifest)
_info = msgspec.json.Decoder(NodeInfo)
_report = msgspec.json.Decoder(NodeReport)


class Store:
    """One SQLite database; every write happens in `transaction()`, which bumps the revision."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = sqlite3.connect(path, autocommit=True, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(_SCHEMA)
        for table, column, kind in _ADDED_COLUMNS:
            present = {row[1] for row in self._db.execute(f"PRAGMA table_info({table})")}
            if column not in present:
                self._db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")

    def close(self) -> None:
        """Close the database."""
        self._db.close()

    def listen(self, changed: Callable[[], None]) -> None:
        """Nothing to watch: one origin holds a SQLite database (the data directory's lock)."""

    def pin(self, name: str, value: str) -> str:
        """Store `value` under `name` unless a value is stored already; returns the stored one."""
        self._db.execute("INSERT OR IGNORE INTO pins VALUES (?, ?)", (name, value))
        row = self._db.execute("SELECT value FROM pins WHERE name = ?", (name,)).fetchone()
        return str(row[0])

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Group writes; committed together on success, rolled back on any exception."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def revision(self) -> int:
        """The current global revision."""
        row = self._db.execute("SELECT value FROM meta WHERE key = 'revision'").fetchone()
        return int(row[0])

    def bump(self) -> int:
        """Increase the revision by one (inside a transaction) and return the new value."""
        self._db.execute("UPDATE meta SET value = value + 1 WHERE key = 'revision'")
        return self.revision()

    # Tokens.

    def add_token(
        self,
        token_hash: str,
        role: str,
        now: float,
        expires_at: float | None = None,
        node_id: str | None = None,
    ) -> None:
        """Store a token's hash with its role, expiry and the node it is bound to."""
        self._db.execute(
            "INSERT INTO tokens (hash, role, created_at, node_id, expires_at) VALUES (?, ?, ?, ?, ?)",
            (token_hash, role, now, node_id, expires_at),
        )

    def token(self, token_hash: str) -> TokenRecord | None:
        """The token with this hash, or None."""
        row = self._db.execute(
            f"SELECT {_TOKEN_COLUMNS} FROM tokens WHERE hash = ?", (token_hash,)
        ).fetchone()
        return None if row is None else _token(row)

    def tokens(self, id_prefix: str = "") -> list[TokenRecord]:
        """Every token (whose hash starts with `id_prefix`), oldest first."""
        rows = self._db.execute(
            f"SELECT {_TOKEN_COLUMNS} FROM tokens WHERE substr(hash, 1, ?) = ? ORDER BY created_at, hash",
            (len(id_prefix), id_prefix),
        )
        return [_token(row) for row in rows]

    def count_tokens(self, role: str) -> int:
        """How many tokens have this role (revoked and expired ones included)."""
        row = self._db.execute("SELECT count(*) FROM tokens WHERE role = ?", (role,)).fetchone()
        return int(row[0])

    def revoke_token(self, token_hash: str, now: float) -> None:
        """Mark a token revoked at `now` (kept, so `token ls` shows it)."""
        self._db.execute(
            "UPDATE tokens SET revoked_at = ? WHERE hash = ? AND revoked_at IS NULL", (now, token_hash)
        )

    def token_used(self, token_hash: str, now: float) -> None:
        """Record when a token was last used (no revision bump: nodes need not hear of it)."""
        self._db.execute("UPDATE tokens SET last_used = ? WHERE hash = ?", (now, token_hash))

    def node_token(self, node_id: str) -> str | None:
        """The hash of the token node `node_id` belongs to, or None (unknown, or registered before
        tokens were bound)."""
        row = self._db.execute("SELECT token_hash FROM nodes WHERE node_id = ?", (node_id,)).fetchone()
        return None if row is None or row[0] is None else str(row[0])

    def token_nodes(self) -> dict[str, list[str]]:
        """Token hash -> the ids of the nodes that belong to it, sorted."""
        found: dict[str, list[str]] = {}
        rows = self._db.execute(
            "SELECT token_hash, node_id FROM nodes WHERE token_hash IS NOT NULL ORDER BY node_id"
        )
        for token_hash, node_id in rows:
            found.setdefault(str(token_hash), []).append(str(node_id))
        return found

    # Functions and versions.

    def function(self, name: str) -> FunctionRecord | None:
        """The function called `name`, or None."""
        row = self._db.execute("SELECT * FROM functions WHERE name = ?", (name,)).fetchone()
        return None if row is None else _function(row)

    def functions(self) -> list[FunctionRecord]:
        """Every function, by name."""
        return [_function(row) for row in self._db.execute("SELECT * FROM functions ORDER BY name")]

    def put_function(self, record: FunctionRecord) -> None:
        """Insert or replace a function."""
        self._db.execute(
            "INSERT OR REPLACE INTO functions VALUES (?, ?, ?, ?, ?)",
            (
                record.name,
                _json(record.releases),
                _json(record.history),
                record.created_at,
                record.updated_at,
            ),
        )

    def delete_function(self, name: str) -> None:
        """Delete a function and all its versions."""
        self._db.execute("DELETE FROM functions WHERE name = ?", (name,))
        self._db.execute("DELETE FROM versions WHERE name = ?", (name,))
        self._db.execute("DELETE FROM failures WHERE name = ?", (name,))
        self._db.execute("DELETE FROM secrets WHERE function = ?", (name,))

    def version(self, name: str, version: str) -> VersionRecord | None:
        """One version of a function, or None."""
        row = self._db.execute(
            "SELECT * FROM versions WHERE name = ? AND version = ?", (name, version)
        ).fetchone()
        return None if row is None else _version(row)

    def versions(self, name: str) -> list[VersionRecord]:
        """Every kept version of a function, newest first."""
        rows = self._db.execute(
            "SELECT * FROM versions WHERE name = ? ORDER BY created_at DESC, rowid DESC", (name,)
        )
        return [_version(row) for row in rows]

    def put_version(self, record: VersionRecord) -> None:
        """Insert or replace a version (a re-upload refreshes its creation time)."""
        self._db.execute(
            "INSERT OR REPLACE INTO versions VALUES (?, ?, ?, ?, ?)",
            (record.name, record.version, record.created_at, record.size, _json(record.manifest)),
        )

    def delete_versions(self, name: str, versions: list[str]) -> None:
        """Forget these versions of a function."""
        pairs = [(name, v) for v in versions]
        self._db.executemany("DELETE FROM versions WHERE name = ? AND version = ?", pairs)
        self._db.executemany("DELETE FROM failures WHERE name = ? AND version = ?", pairs)

    def last_deploys(self) -> dict[str, float]:
        """Each function's newest upload time (what decides a route two functions claim)."""
        rows = self._db.execute("SELECT name, max(created_at) FROM versions GROUP BY name")
        return {str(row[0]): float(row[1]) for row in rows}

    def referenced_blobs(self) -> set[str]:
        """Every digest some kept version still refers to."""
        return {str(row[0]) for row in self._db.execute("SELECT DISTINCT version FROM versions")}

    # Key sets fetched from `[auth] jwks_url` (edge/origin/keysets.py).

    def put_jwks(self, url: str, body: str, now: float) -> None:
        """Store the key set fetched from `url`."""
        self._db.execute("INSERT OR REPLACE INTO jwks VALUES (?, ?, ?)", (url, body, now))

    def jwks(self) -> dict[str, str]:
        """Every stored key set by URL."""
        return {str(url): str(body) for url, body in self._db.execute("SELECT url, body FROM jwks")}

    # Purge orders.

    def add_purge(self, function: str, kind: PurgeKind, value: str, now: float) -> int:
        """Store a purge order and return its id."""
        cursor = self._db.execute(
            "INSERT INTO purges (function, kind, value, created_at) VALUES (?, ?, ?, ?)",
            (function, kind, value, now),
        )
        return int(cursor.lastrowid or 0)

    def purges(self) -> list[PurgeOrder]:
        """Every kept purge order, oldest first."""
        rows = self._db.execute("SELECT id, function, kind, value FROM purges ORDER BY id")
        return [PurgeOrder(id=row[0], function=row[1], kind=row[2], value=row[3]) for row in rows]

    def prune_purges(self, keep: int, older_than: float) -> None:
        """Drop orders that are both outside the newest `keep` and older than `older_than`."""
        self._db.execute(
            "DELETE FROM purges WHERE created_at < ? AND id NOT IN"
            " (SELECT id FROM purges ORDER BY id DESC LIMIT ?)",
            (older_than, keep),
        )

    # Nodes.

    def put_node(self, info: NodeInfo, now: float, token_hash: str | None = None) -> None:
        """Register a node, or update what it sent; keeps its first registration time and report.

        With `token_hash`, the node now belongs to that token (the caller checked it may).
        """
        self._db.execute(
            "INSERT INTO nodes (node_id, info, registered_at, last_seen, token_hash) VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT (node_id) DO UPDATE SET info = excluded.info, last_seen = excluded.last_seen,"
            " token_hash = coalesce(excluded.token_hash, token_hash)",
            (info.node_id, _json(info), now, now, token_hash),
        )

    def touch_node(
        self, node_id: str, now: float, report: NodeReport | None = None, token_hash: str | None = None
    ) -> bool:
        """Mark a node seen (and store its report; with `token_hash`, it belongs to that token now);
        False when it is not registered."""
        cursor = self._db.execute(
            "UPDATE nodes SET last_seen = ?, report = coalesce(?, report),"
            " token_hash = coalesce(?, token_hash) WHERE node_id = ?",
            (now, None if report is None else _json(report), token_hash, node_id),
        )
        if report is not None and cursor.rowcount > 0:
            self.note_failures(report, now)
        return cursor.rowcount > 0

    def note_failures(self, report: NodeReport, now: float) -> None:
        """Remember the versions a report says failed to load on its node; forget those it now serves."""
        for status in report.functions:
            pairs = [(status.name, version, report.node_id) for version in status.versions]
            if status.state == "serving":
                self._db.executemany(
                    "DELETE FROM failures WHERE name = ? AND version = ? AND node_id = ?", pairs
                )
            elif status.state == "error":  # not "failing": that version loaded, then kept wedging
                self._db.executemany(
                    "INSERT OR REPLACE INTO failures VALUES (?, ?, ?, ?, ?)",
                    [(*pair, status.error, now) for pair in pairs],
                )

    def failures(self, name: str | None = None) -> dict[tuple[str, str], list[str]]:
        """(function, version) -> the ids of the nodes where it failed, for one function or all."""
        query = "SELECT name, version, node_id FROM failures"
        rows = self._db.execute(
            query + (" WHERE name = ? ORDER BY node_id" if name else " ORDER BY node_id"),
            (name,) if name else (),
        )
        found: dict[tuple[str, str], list[str]] = {}
        for function, version, node_id in rows:
            found.setdefault((str(function), str(version)), []).append(str(node_id))
        return found

    def nodes(self) -> list[NodeRecord]:
        """Every registered node, by id."""
        rows = self._db.execute("SELECT info, registered_at, last_seen, report FROM nodes ORDER BY node_id")
        return [
            NodeRecord(
                info=_info.decode(row[0]),
                registered_at=row[1],
                last_seen=row[2],
                report=None if row[3] is None else _report.decode(row[3]),
            )
            for row in rows
        ]

    def node(self, node_id: str) -> NodeRecord | None:
        """One registered node, or None."""
        row = self._db.execute(
            "SELECT info, registered_at, last_seen, report FROM nodes WHERE node_id = ?", (node_id,)
        ).fetchone()
        if row is None:
            return None
        report = None if row[3] is None else _report.decode(row[3])
        return NodeRecord(info=_info.decode(row[0]), registered_at=row[1], last_seen=row[2], report=report)

    def set_node_info(self, info: NodeInfo) -> None:
        """Replace what a registered node sent (e.g. without its public key), leaving its times."""
        self._db.execute("UPDATE nodes SET info = ? WHERE node_id = ?", (_json(info), info.node_id))

    # Secrets (values arrive and leave encrypted: see edge/origin/vault.py).

    def put_secret(self, record: SecretRecord) -> None:
        """Insert or replace one secret of a function."""
        self._db.execute(
            "INSERT OR REPLACE INTO secrets VALUES (?, ?, ?, ?, ?)",
            (record.function, record.key, record.sealed, record.size, record.updated_at),
        )

    def delete_secret(self, function: str, key: str) -> bool:
        """Delete one secret; False when there was none."""
        cursor = self._db.execute("DELETE FROM secrets WHERE function = ? AND key = ?", (function, key))
        return cursor.rowcount > 0

    def secrets(self, function: str | None = None) -> list[SecretRecord]:
        """The secrets of one function, or of all, by function and key."""
        query = "SELECT function, key, sealed, size, updated_at FROM secrets"
        rows = self._db.execute(
            query
            + (" WHERE function = ? ORDER BY key" if function is not None else " ORDER BY function, key"),
            (function,) if function is not None else (),
        )
        return [
            SecretRecord(function=row[0], key=row[1], sealed=bytes(row[2]), size=row[3], updated_at=row[4])
            for row in rows
        ]


def _token(row: tuple[Any, ...]) -> TokenRecord:
    token_hash, role, created_at, node_id, expires_at, last_used, revoked_at = row
    return TokenRecord(
        hash=token_hash,
        role=role,
        created_at=created_at,
        node_id=node_id,
        expires_at=expires_at,
        last_used=last_used,
        revoked_at=revoked_at,
    )


def _function(row: tuple[Any, ...]) -> FunctionRecord:
    name, releases, history, created_at, updated_at = row
    return FunctionRecord(
        name=name,
        releases=_releases.decode(releases),
        history=_history.decode(history),
        created_at=created_at,
        updated_at=updated_at,
    )


def _version(row: tuple[Any, ...]) -> VersionRecord:
    name, version, created_at, size, manifest = row
    return VersionRecord(
        name=name, version=version, created_at=created_at, size=size, manifest=_manifest.decode(manifest)
    )
