"""The origin's metadata on PostgreSQL (`--database postgresql://...`), for several origins at once.

The same contract as the SQLite `Store` (edge/origin/metadata.py). Every transaction first takes
one advisory lock, so transactions of all origins on the database run one at a time, as SQLite's
`BEGIN IMMEDIATE` makes them in one process. A revision bump sends `NOTIFY edge_revision`, which
PostgreSQL delivers at commit; `listen` keeps one more connection per origin that waits for it
and wakes that origin's long polls.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import msgspec
import psycopg

from edge.control.messages import NodeInfo, NodeReport, PurgeKind, PurgeOrder
from edge.origin.metadata import DatabaseError
from edge.origin.store import (
    FunctionRecord,
    NodeRecord,
    SecretRecord,
    TokenRecord,
    VersionRecord,
    _function,
    _info,
    _report,
    _token,
    _version,
)

__all__ = ["CHANNEL", "PostgresStore"]

log = logging.getLogger("edge.origin")

CHANNEL = "edge_revision"
# The advisory lock every transaction holds (any constant: it only has to be the same everywhere).
_LOCK = 0x6564_6765
# Seconds between checks of `close()` while the listener waits for a notification.
_LISTEN_TICK_S = 0.5

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BIGINT NOT NULL);
INSERT INTO meta (key, value) VALUES ('revision', 0) ON CONFLICT DO NOTHING;
CREATE TABLE IF NOT EXISTS pins (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tokens (
    hash TEXT PRIMARY KEY, role TEXT NOT NULL, created_at DOUBLE PRECISION NOT NULL, node_id TEXT,
    expires_at DOUBLE PRECISION, last_used DOUBLE PRECISION, revoked_at DOUBLE PRECISION);
CREATE TABLE IF NOT EXISTS functions (
    name TEXT PRIMARY KEY, releases TEXT NOT NULL, history TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL, updated_at DOUBLE PRECISION NOT NULL);
CREATE SEQUENCE IF NOT EXISTS version_order;
CREATE TABLE IF NOT EXISTS versions (
    name TEXT NOT NULL, version TEXT NOT NULL, created_at DOUBLE PRECISION NOT NULL,
    size BIGINT NOT NULL, manifest TEXT NOT NULL,
    seq BIGINT NOT NULL DEFAULT nextval('version_order'), PRIMARY KEY (name, version));
CREATE TABLE IF NOT EXISTS purges (
    id BIGSERIAL PRIMARY KEY, function TEXT NOT NULL, kind TEXT NOT NULL, value TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL);
CREATE TABLE IF NOT EXISTS nodes (
    node_id TEXT PRIMARY KEY, info TEXT NOT NULL, registered_at DOUBLE PRECISION NOT NULL,
    last_seen DOUBLE PRECISION NOT NULL, report TEXT, token_hash TEXT);
CREATE TABLE IF NOT EXISTS failures (
    name TEXT NOT NULL, version TEXT NOT NULL, node_id TEXT NOT NULL, error TEXT NOT NULL,
    at DOUBLE PRECISION NOT NULL, PRIMARY KEY (name, version, node_id));
CREATE TABLE IF NOT EXISTS jwks (
    url TEXT PRIMARY KEY, body TEXT NOT NULL, fetched_at DOUBLE PRECISION NOT NULL);
CREATE TABLE IF NOT EXISTS secrets (
    function TEXT NOT NULL, key TEXT NOT NULL, sealed BYTEA NOT NULL, size BIGINT NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL, PRIMARY KEY (function, key));
"""
_TOKEN_COLUMNS = "hash, role, created_at, node_id, expires_at, last_used, revoked_at"
_VERSION_COLUMNS = "name, version, created_at, size, manifest"
_NODE_COLUMNS = "info, registered_at, last_seen, report"

_json = msgspec.json.encode


def _text(value: bytes) -> str:
    return value.decode()


class PostgresStore:
    """One PostgreSQL database shared by every origin given the same `--database` URL."""

    def __init__(self, url: str) -> None:
        self.url = url
        try:
            self._db = psycopg.connect(url, autocommit=True)
        except psycopg.OperationalError as exc:
            reason = " ".join(str(exc).split())
            raise DatabaseError(f"--database {url}: cannot connect: {reason}") from None
        self._in_transaction = False
        self._stop = threading.Event()
        self._listener: threading.Thread | None = None
        with self.transaction():  # two origins starting at once must not both create the tables
            self._db.execute(_SCHEMA)

    def close(self) -> None:
        """Close the connection and stop the listener."""
        self._stop.set()
        self._db.close()
        if self._listener is not None:
            self._listener.join(timeout=_LISTEN_TICK_S * 4)

    def _execute(self, query: str, params: tuple[Any, ...] = ()) -> psycopg.Cursor[Any]:
        if (self._db.closed or self._db.broken) and not self._in_transaction:
            # The server restarted or dropped us: the request that saw the error failed, this one
            # opens a new connection (no transaction was open, so nothing half-done is lost).
            self._db.close()
            self._db = psycopg.connect(self.url, autocommit=True)
        return self._db.execute(query, params)

    def _one(self, query: str, params: tuple[Any, ...] = ()) -> tuple[Any, ...]:
        """The one row a query that always has one returns."""
        row = self._execute(query, params).fetchone()
        if row is None:
            raise RuntimeError(f"no row for {query}")
        return tuple(row)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Group writes under the database-wide lock; rolled back on any exception."""
        self._execute("BEGIN")
        self._in_transaction = True
        try:
            self._db.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK,))
            yield
        except BaseException:
            self._in_transaction = False
            if not self._db.closed:
                self._db.execute("ROLLBACK")
            raise
        self._in_transaction = False
        self._db.execute("COMMIT")

    def listen(self, changed: Callable[[], None]) -> None:
        """Call `changed()` from a thread after every revision bump any origin commits, and once
        each time the listening connection is (re)established."""
        self._listener = threading.Thread(
            target=self._listen, args=(changed,), name="edge-origin-listen", daemon=True
        )
        self._listener.start()

    def _listen(self, changed: Callable[[], None]) -> None:
        failing = False
        while not self._stop.is_set():
            try:
                with psycopg.connect(self.url, autocommit=True) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    if failing:
                        log.info("listening for revisions on the database again")
                    failing = False
                    changed()  # a bump committed before LISTEN took effect was not heard
                    while not self._stop.is_set():
                        for _ in conn.notifies(timeout=_LISTEN_TICK_S):
                            changed()
            except psycopg.Error as exc:
                if not failing:
                    log.error("cannot listen for revisions on the database: %s; trying again", exc)
                failing = True
                self._stop.wait(1.0)

    def pin(self, name: str, value: str) -> str:
        """Store `value` under `name` unless a value is stored already; returns the stored one."""
        self._execute("INSERT INTO pins VALUES (%s, %s) ON CONFLICT DO NOTHING", (name, value))
        row = self._one("SELECT value FROM pins WHERE name = %s", (name,))
        return str(row[0])

    def revision(self) -> int:
        """The current global revision."""
        row = self._one("SELECT value FROM meta WHERE key = 'revision'")
        return int(row[0])

    def bump(self) -> int:
        """Increase the revision by one (inside a transaction); every listener hears it at commit."""
        row = self._one("UPDATE meta SET value = value + 1 WHERE key = 'revision' RETURNING value")
        revision = int(row[0])
        self._execute("SELECT pg_notify(%s, %s)", (CHANNEL, str(revision)))
        return revision

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
        self._execute(
            "INSERT INTO tokens (hash, role, created_at, node_id, expires_at) VALUES (%s, %s, %s, %s, %s)",
            (token_hash, role, now, node_id, expires_at),
        )

    def token(self, token_hash: str) -> TokenRecord | None:
        """The token with this hash, or None."""
        row = self._execute(f"SELECT {_TOKEN_COLUMNS} FROM tokens WHERE hash = %s", (token_hash,)).fetchone()
        return None if row is None else _token(row)

    def tokens(self, id_prefix: str = "") -> list[TokenRecord]:
        """Every token (whose hash starts with `id_prefix`), oldest first."""
        rows = self._execute(
            f"SELECT {_TOKEN_COLUMNS} FROM tokens WHERE left(hash, %s) = %s ORDER BY created_at, hash",
            (len(id_prefix), id_prefix),
        )
        return [_token(row) for row in rows]

    def count_tokens(self, role: str) -> int:
        """How many tokens have this role (revoked and expired ones included)."""
        row = self._one("SELECT count(*) FROM tokens WHERE role = %s", (role,))
        return int(row[0])

    def revoke_token(self, token_hash: str, now: float) -> None:
        """Mark a token revoked at `now`."""
        self._execute(
            "UPDATE tokens SET revoked_at = %s WHERE hash = %s AND revoked_at IS NULL", (now, token_hash)
        )

    def token_used(self, token_hash: str, now: float) -> None:
        """Record when a token was last used (no revision bump)."""
        self._execute("UPDATE tokens SET last_used = %s WHERE hash = %s", (now, token_hash))

    def node_token(self, node_id: str) -> str | None:
        """The hash of the token node `node_id` belongs to, or None."""
        row = self._execute("SELECT token_hash FROM nodes WHERE node_id = %s", (node_id,)).fetchone()
        return None if row is None or row[0] is None else str(row[0])

    def token_nodes(self) -> dict[str, list[str]]:
        """Token hash -> the ids of the nodes that belong to it, sorted."""
        found: dict[str, list[str]] = {}
        rows = self._execute(
            "SELECT token_hash, node_id FROM nodes WHERE token_hash IS NOT NULL ORDER BY node_id"
        )
        for token_hash, node_id in rows:
            found.setdefault(str(token_hash), []).append(str(node_id))
        return found

    # Functions and versions.

    def function(self, name: str) -> FunctionRecord | None:
        """The function called `name`, or None."""
        row = self._execute(
            "SELECT name, releases, history, created_at, updated_at FROM functions WHERE name = %s", (name,)
        ).fetchone()
        return None if row is None else _function(row)

    def functions(self) -> list[FunctionRecord]:
        """Every function, by name."""
        rows = self._execute(
            "SELECT name, releases, history, created_at, updated_at FROM functions ORDER BY name"
        )
        return [_function(row) for row in rows]

    def put_function(self, record: FunctionRecord) -> None:
        """Insert or replace a function."""
        self._execute(
            "INSERT INTO functions VALUES (%s, %s, %s, %s, %s) ON CONFLICT (name) DO UPDATE SET"
            " releases = excluded.releases, history = excluded.history,"
            " created_at = excluded.created_at, updated_at = excluded.updated_at",
            (
                record.name,
                _text(_json(record.releases)),
                _text(_json(record.history)),
                record.created_at,
                record.updated_at,
            ),
        )

    def delete_function(self, name: str) -> None:
        """Delete a function with its versions, failures and secrets."""
        self._execute("DELETE FROM functions WHERE name = %s", (name,))
        self._execute("DELETE FROM versions WHERE name = %s", (name,))
        self._execute("DELETE FROM failures WHERE name = %s", (name,))
        self._execute("DELETE FROM secrets WHERE function = %s", (name,))

    def version(self, name: str, version: str) -> VersionRecord | None:
        """One version of a function, or None."""
        row = self._execute(
            f"SELECT {_VERSION_COLUMNS} FROM versions WHERE name = %s AND version = %s", (name, version)
        ).fetchone()
        return None if row is None else _version(row)

    def versions(self, name: str) -> list[VersionRecord]:
        """Every kept version of a function, newest first (a re-upload counts as new)."""
        rows = self._execute(
            f"SELECT {_VERSION_COLUMNS} FROM versions WHERE name = %s ORDER BY created_at DESC, seq DESC",
            (name,),
        )
        return [_version(row) for row in rows]

    def put_version(self, record: VersionRecord) -> None:
        """Insert or replace a version (a re-upload refreshes its creation time and order)."""
        self._execute(
            f"INSERT INTO versions ({_VERSION_COLUMNS}) VALUES (%s, %s, %s, %s, %s)"
            " ON CONFLICT (name, version) DO UPDATE SET created_at = excluded.created_at,"
            " size = excluded.size, manifest = excluded.manifest, seq = nextval('version_order')",
            (record.name, record.version, record.created_at, record.size, _text(_json(record.manifest))),
        )

    def delete_versions(self, name: str, versions: list[str]) -> None:
        """Forget these versions of a function."""
        for version in versions:
            self._execute("DELETE FROM versions WHERE name = %s AND version = %s", (name, version))
            self._execute("DELETE FROM failures WHERE name = %s AND version = %s", (name, version))

    def last_deploys(self) -> dict[str, float]:
        """Each function's newest upload time."""
        rows = self._execute("SELECT name, max(created_at) FROM versions GROUP BY name")
        return {str(row[0]): float(row[1]) for row in rows}

    def referenced_blobs(self) -> set[str]:
        """Every digest some kept version still refers to."""
        return {str(row[0]) for row in self._execute("SELECT DISTINCT version FROM versions")}

    # Key sets.

    def put_jwks(self, url: str, body: str, now: float) -> None:
        """Store the key set fetched from `url`."""
        self._execute(
            "INSERT INTO jwks VALUES (%s, %s, %s) ON CONFLICT (url) DO UPDATE SET"
            " body = excluded.body, fetched_at = excluded.fetched_at",
            (url, body, now),
        )

    def jwks(self) -> dict[str, str]:
        """Every stored key set by URL."""
        return {str(url): str(body) for url, body in self._execute("SELECT url, body FROM jwks")}

    # Purge orders.

    def add_purge(self, function: str, kind: PurgeKind, value: str, now: float) -> int:
        """Store a purge order and return its id."""
        row = self._one(
            "INSERT INTO purges (function, kind, value, created_at) VALUES (%s, %s, %s, %s) RETURNING id",
            (function, kind, value, now),
        )
        return int(row[0])

    def purges(self) -> list[PurgeOrder]:
        """Every kept purge order, oldest first."""
        rows = self._execute("SELECT id, function, kind, value FROM purges ORDER BY id")
        return [PurgeOrder(id=row[0], function=row[1], kind=row[2], value=row[3]) for row in rows]

    def prune_purges(self, keep: int, older_than: float) -> None:
        """Drop orders both outside the newest `keep` and older than `older_than`."""
        self._execute(
            "DELETE FROM purges WHERE created_at < %s AND id NOT IN"
            " (SELECT id FROM purges ORDER BY id DESC LIMIT %s)",
            (older_than, keep),
        )

    # Nodes.

    def put_node(self, info: NodeInfo, now: float, token_hash: str | None = None) -> None:
        """Register a node or update what it sent, keeping its first registration time and report."""
        self._execute(
            "INSERT INTO nodes (node_id, info, registered_at, last_seen, token_hash)"
            " VALUES (%s, %s, %s, %s, %s)"
            " ON CONFLICT (node_id) DO UPDATE SET info = excluded.info, last_seen = excluded.last_seen,"
            " token_hash = coalesce(excluded.token_hash, nodes.token_hash)",
            (info.node_id, _text(_json(info)), now, now, token_hash),
        )

    def touch_node(
        self, node_id: str, now: float, report: NodeReport | None = None, token_hash: str | None = None
    ) -> bool:
        """Mark a node seen (storing its report); False when it is not registered."""
        cursor = self._execute(
            "UPDATE nodes SET last_seen = %s, report = coalesce(%s, report),"
            " token_hash = coalesce(%s, token_hash) WHERE node_id = %s",
            (now, None if report is None else _text(_json(report)), token_hash, node_id),
        )
        known = cursor.rowcount > 0
        if report is not None and known:
            self.note_failures(report, now)
        return known

    def note_failures(self, report: NodeReport, now: float) -> None:
        """Remember the versions a report says failed to load; forget those it now serves."""
        for status in report.functions:
            for version in status.versions:
                if status.state == "serving":
                    self._execute(
                        "DELETE FROM failures WHERE name = %s AND version = %s AND node_id = %s",
                        (status.name, version, report.node_id),
                    )
                elif status.state == "error":  # not "failing": that version loaded, then kept wedging
                    self._execute(
                        "INSERT INTO failures VALUES (%s, %s, %s, %s, %s)"
                        " ON CONFLICT (name, version, node_id) DO UPDATE SET"
                        " error = excluded.error, at = excluded.at",
                        (status.name, version, report.node_id, status.error, now),
                    )

    def failures(self, name: str | None = None) -> dict[tuple[str, str], list[str]]:
        """(function, version) -> the ids of the nodes where it failed."""
        if name:
            rows = self._execute(
                "SELECT name, version, node_id FROM failures WHERE name = %s ORDER BY node_id", (name,)
            )
        else:
            rows = self._execute("SELECT name, version, node_id FROM failures ORDER BY node_id")
        found: dict[tuple[str, str], list[str]] = {}
        for function, version, node_id in rows:
            found.setdefault((str(function), str(version)), []).append(str(node_id))
        return found

    def nodes(self) -> list[NodeRecord]:
        """Every registered node, by id."""
        rows = self._execute(f"SELECT {_NODE_COLUMNS} FROM nodes ORDER BY node_id")
        return [_node(row) for row in rows]

    def node(self, node_id: str) -> NodeRecord | None:
        """One registered node, or None."""
        row = self._execute(f"SELECT {_NODE_COLUMNS} FROM nodes WHERE node_id = %s", (node_id,)).fetchone()
        return None if row is None else _node(row)

    def set_node_info(self, info: NodeInfo) -> None:
        """Replace what a registered node sent, leaving its times."""
        self._execute("UPDATE nodes SET info = %s WHERE node_id = %s", (_text(_json(info)), info.node_id))

    # Secrets.

    def put_secret(self, record: SecretRecord) -> None:
        """Insert or replace one secret of a function."""
        self._execute(
            "INSERT INTO secrets VALUES (%s, %s, %s, %s, %s) ON CONFLICT (function, key) DO UPDATE SET"
            " sealed = excluded.sealed, size = excluded.size, updated_at = excluded.updated_at",
            (record.function, record.key, record.sealed, record.size, record.updated_at),
        )

    def delete_secret(self, function: str, key: str) -> bool:
        """Delete one secret; False when there was none."""
        cursor = self._execute("DELETE FROM secrets WHERE function = %s AND key = %s", (function, key))
        return cursor.rowcount > 0

    def secrets(self, function: str | None = None) -> list[SecretRecord]:
        """The secrets of one function, or of all, by function and key."""
        query = "SELECT function, key, sealed, size, updated_at FROM secrets"
        if function is not None:
            rows = self._execute(query + " WHERE function = %s ORDER BY key", (function,))
        else:
            rows = self._execute(query + " ORDER BY function, key")
        return [
            SecretRecord(function=row[0], key=row[1], sealed=bytes(row[2]), size=row[3], updated_at=row[4])
            for row in rows
        ]


def _node(row: tuple[Any, ...]) -> NodeRecord:
    info, registered_at, last_seen, report = row
    return NodeRecord(
        info=_info.decode(info),
        registered_at=registered_at,
        last_seen=last_seen,
        report=None if report is None else _report.decode(report),
    )
