"""One contract for the origin's metadata stores, run against SQLite and a real PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest
from backends import Postgres, pg_cluster

from edge.control.messages import FunctionStatus, NodeInfo, NodeReport, Release
from edge.origin.metadata import DatabaseError, MetadataStore, check_database, open_metadata
from edge.origin.store import FunctionRecord, SecretRecord, VersionRecord
from isolates.manifest import Manifest

__all__ = ["pg_cluster"]

A = "a" * 64
B = "b" * 64
C = "c" * 64


def _info(node_id: str, public_key: str = "") -> NodeInfo:
    return NodeInfo(
        node_id=node_id,
        hostname="h",
        arch="x86_64",
        python="3.13",
        cpus=2,
        memory_bytes=1,
        public_key=public_key,
    )


def _version(name: str, digest: str, at: float) -> VersionRecord:
    return VersionRecord(name=name, version=digest, created_at=at, size=10, manifest=Manifest(name=name))


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The empty URL (SQLite in `tmp_path`), or a new empty PostgreSQL database's."""
    if request.param == "sqlite":
        return ""
    cluster: Postgres = request.getfixturevalue("pg_cluster")
    return cluster.create()


@pytest.fixture
def store(url: str, tmp_path: Path) -> Iterator[MetadataStore]:
    with closing(open_metadata(url, tmp_path)) as opened:
        yield opened


class TestStoreContract:
    def test_revision_counts_committed_bumps_only(self, store: MetadataStore) -> None:
        assert store.revision() == 0
        with store.transaction():
            assert store.bump() == 1
        with pytest.raises(RuntimeError, match="undo"), store.transaction():
            store.bump()
            store.put_function(FunctionRecord(name="f", releases=[], history=[], created_at=1, updated_at=1))
            raise RuntimeError("undo")
        assert (store.revision(), store.function("f")) == (1, None)

    def test_pin_keeps_the_first_value(self, store: MetadataStore) -> None:
        assert store.pin("signing-key", "one") == "one"
        assert store.pin("signing-key", "two") == "one"

    def test_tokens(self, store: MetadataStore) -> None:
        with store.transaction():
            store.add_token(A, "admin", 1.0)
            store.add_token(B, "node", 2.0, expires_at=9.0, node_id="n1")
        assert store.token(C) is None
        node = store.token(B)
        assert node is not None
        assert (node.role, node.expires_at, node.node_id, node.id) == ("node", 9.0, "n1", "b" * 12)
        assert [t.hash for t in store.tokens()] == [A, B]
        assert [t.hash for t in store.tokens("bbb")] == [B]
        assert (store.count_tokens("admin"), store.count_tokens("node")) == (1, 1)
        store.revoke_token(A, 5.0)
        store.revoke_token(A, 6.0)  # the first revocation time stays
        store.token_used(B, 7.0)
        revoked, used = store.token(A), store.token(B)
        assert revoked is not None and used is not None
        assert (revoked.revoked_at, used.last_used) == (5.0, 7.0)

    def test_functions_and_versions(self, store: MetadataStore) -> None:
        releases = [Release(version=A, weight=90), Release(version=B, weight=10)]
        with store.transaction():
            store.put_function(
                FunctionRecord(name="f", releases=releases, history=[C], created_at=1, updated_at=2)
            )
            store.put_function(FunctionRecord(name="e", releases=[], history=[], created_at=1, updated_at=1))
            for digest in (A, B, C):
                store.put_version(_version("f", digest, 5.0))  # one clock tick: insertion decides
            store.put_version(_version("e", A, 3.0))
        stored = store.function("f")
        assert stored is not None
        assert (stored.releases, stored.history, stored.updated_at) == (releases, [C], 2.0)
        assert [f.name for f in store.functions()] == ["e", "f"]
        assert [v.version for v in store.versions("f")] == [C, B, A]
        with store.transaction():
            store.put_version(_version("f", A, 5.0))  # a re-upload is the newest again
        assert [v.version for v in store.versions("f")] == [A, C, B]
        version = store.version("f", B)
        assert version is not None and version.manifest == Manifest(name="f")
        assert store.last_deploys() == {"e": 3.0, "f": 5.0}
        assert store.referenced_blobs() == {A, B, C}
        with store.transaction():
            store.delete_versions("f", [B, C])
        assert [v.version for v in store.versions("f")] == [A]
        with store.transaction():
            store.delete_function("f")
        assert (store.function("f"), store.versions("f"), store.referenced_blobs()) == (None, [], {A})

    def test_purges_keep_growing_ids_and_prune(self, store: MetadataStore) -> None:
        with store.transaction():
            ids = [store.add_purge("f", "path", f"/{i}", float(i)) for i in range(5)]
        assert ids == sorted(ids) and len(set(ids)) == 5
        with store.transaction():
            store.prune_purges(keep=2, older_than=3.0)  # drops the ones at 0, 1, 2
        assert [p.value for p in store.purges()] == ["/3", "/4"]
        with store.transaction():
            later = store.add_purge("f", "tag", "t", 9.0)
        assert later > ids[-1]

    def test_nodes_reports_and_failures(self, store: MetadataStore) -> None:
        with store.transaction():
            store.add_token(A, "node", 1.0)
            store.put_node(_info("n2"), 1.0, token_hash=A)
            store.put_node(_info("n1", "key"), 2.0)
        assert store.touch_node("nobody", 3.0) is False
        failing = NodeReport(
            node_id="n1",
            applied_revision=4,
            functions=[FunctionStatus(name="f", versions=[B], state="error", error="boom")],
        )
        assert store.touch_node("n1", 4.0, failing, token_hash=A) is True
        with store.transaction():
            store.put_node(_info("n1", "key"), 5.0)  # registering again keeps the first time and report
        node = store.node("n1")
        assert node is not None
        assert (node.registered_at, node.last_seen, node.report) == (2.0, 5.0, failing)
        assert [n.info.node_id for n in store.nodes()] == ["n1", "n2"]
        assert store.node_token("n1") == A and store.token_nodes() == {A: ["n1", "n2"]}
        assert store.failures() == {("f", B): ["n1"]} == store.failures("f")
        serving = NodeReport(
            node_id="n1", applied_revision=5, functions=[FunctionStatus(name="f", versions=[B])]
        )
        store.touch_node("n1", 6.0, serving)
        assert store.failures() == {}
        with store.transaction():
            store.set_node_info(_info("n1"))
        forgotten = store.node("n1")
        assert forgotten is not None and (forgotten.info.public_key, forgotten.last_seen) == ("", 6.0)

    def test_secrets_and_key_sets(self, store: MetadataStore) -> None:
        sealed = bytes(range(256))
        with store.transaction():
            store.put_secret(SecretRecord(function="f", key="B", sealed=sealed, size=3, updated_at=1.0))
            store.put_secret(SecretRecord(function="f", key="A", sealed=b"x", size=1, updated_at=1.0))
            store.put_secret(SecretRecord(function="g", key="A", sealed=b"y", size=1, updated_at=1.0))
            store.put_secret(SecretRecord(function="f", key="A", sealed=b"z", size=1, updated_at=2.0))
            store.put_jwks("https://idp/keys", "{}", 1.0)
            store.put_jwks("https://idp/keys", '{"keys": []}', 2.0)
        assert [(s.key, s.sealed) for s in store.secrets("f")] == [("A", b"z"), ("B", sealed)]
        assert [(s.function, s.key) for s in store.secrets()] == [("f", "A"), ("f", "B"), ("g", "A")]
        assert store.jwks() == {"https://idp/keys": '{"keys": []}'}
        with store.transaction():
            assert store.delete_secret("f", "A") is True
            assert store.delete_secret("f", "A") is False
            store.delete_function("g")
        assert [s.key for s in store.secrets()] == ["B"]


@pytest.mark.postgres
def test_a_bump_on_one_origin_is_heard_by_another(pg_cluster: Postgres, tmp_path: Path) -> None:
    url = pg_cluster.create()
    heard = threading.Event()
    with closing(open_metadata(url, tmp_path)) as first, closing(open_metadata(url, tmp_path)) as second:
        second.listen(heard.set)
        assert heard.wait(10)  # listening now
        heard.clear()
        with first.transaction():
            first.bump()
        assert heard.wait(10)
        assert second.revision() == first.revision() == 1


@pytest.mark.postgres
def test_transactions_of_two_origins_run_one_at_a_time(pg_cluster: Postgres, tmp_path: Path) -> None:
    url = pg_cluster.create()
    order: list[str] = []
    inside = threading.Event()
    with closing(open_metadata(url, tmp_path)) as first, closing(open_metadata(url, tmp_path)) as second:

        def other() -> None:
            inside.wait(5)
            with second.transaction():
                order.append(f"second saw {second.revision()}")

        thread = threading.Thread(target=other)
        thread.start()
        with first.transaction():
            first.bump()
            inside.set()
            thread.join(0.3)
            assert thread.is_alive(), "the other origin's transaction ran inside this one"
            order.append("first commits")
        thread.join(5)
    assert order == ["first commits", "second saw 1"]


def test_bad_database_urls_are_refused_with_the_fix() -> None:
    with pytest.raises(DatabaseError) as bad:
        check_database("mysql://db/edge")
    assert str(bad.value) == (
        "--database: Expected postgresql://[user@]host[:port]/dbname (or nothing, for SQLite in the"
        " data directory), got 'mysql://db/edge'"
    )
    with pytest.raises(DatabaseError) as secret:
        check_database("postgresql://edge:hunter2@db/edge")
    assert "hunter2" not in str(secret.value)
    assert str(secret.value) == (
        "--database: Expected a URL without a password (an argument is visible to every user of this"
        " machine), got one for postgresql://edge:***@db/edge; put the password in a PostgreSQL"
        " password file (~/.pgpass, or the file PGPASSFILE names) instead"
    )


@pytest.mark.postgres
def test_an_unreachable_database_names_itself(pg_cluster: Postgres, tmp_path: Path) -> None:
    url = f"postgresql://edge@127.0.0.1:{pg_cluster.port}/no_such_db"
    with pytest.raises(
        DatabaseError,
        match=r"^--database postgresql://edge@127\.0\.0\.1:\d+/no_such_db: cannot"
        r" connect: .*database \"no_such_db\" does not exist",
    ):
        open_metadata(url, tmp_path)


@pytest.mark.postgres
def test_a_dropped_connection_fails_one_call_and_the_listener_hears_again(
    pg_cluster: Postgres, tmp_path: Path
) -> None:
    import psycopg

    url = pg_cluster.create()
    heard = threading.Event()
    with closing(open_metadata(url, tmp_path)) as store, psycopg.connect(url, autocommit=True) as admin:
        store.listen(heard.set)
        assert heard.wait(10)  # listening: anything bumped before is looked at once
        heard.clear()
        with store.transaction():
            store.bump()
        assert heard.wait(10)
        heard.clear()
        # What a database restart or a failover does to every connection of the origin.
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        with pytest.raises(psycopg.OperationalError):
            store.revision()
        assert store.revision() == 1  # the next call has a new connection
        # The listener reconnects and wakes its origin once: a bump meanwhile was not heard.
        assert heard.wait(10)
        heard.clear()
        with store.transaction():
            store.bump()
        assert heard.wait(10)  # and it hears bumps again
