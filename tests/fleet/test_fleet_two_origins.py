"""Two origins on one PostgreSQL database and one S3 bucket: a deploy through either reaches nodes
long-polling the other, an origin killed mid-deploy loses nothing, and nodes fail over."""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from backends import S3_ENV, Postgres, S3Server, pg_cluster, s3
from fleet_harness import Node, Origin, run_edge, wait_for, write_version

from edge import bundle
from edge.control.client import OriginClient
from loadtest._servers import free_port

__all__ = ["pg_cluster", "s3"]

pytestmark = pytest.mark.postgres

# How long a node's long poll lasts in the propagation test (the origin's longest).
POLL_S = 60.0
# How long to wait for what should take well under a second (the machine may be loaded).
WAIT_S = 30.0


@dataclass
class Shared:
    """Where both origins keep what they share, and the admin token the first one made."""

    database: str
    blobs: str
    endpoint: str
    root: Path
    token: str = ""

    def origin(self, name: str) -> Origin:
        """An origin (not started) on the shared database and bucket, with data in `root/name`."""
        origin = Origin(self.root / name, self.root / f"{name}.log")
        origin.argv += ["--database", self.database, "--blobs", self.blobs, "--blobs-endpoint", self.endpoint]
        origin.environ.update(S3_ENV)
        return origin

    def admin(self, origin: Origin) -> OriginClient:
        return OriginClient(origin.url, self.token, timeout=10.0)


@pytest.fixture
def shared(pg_cluster: Postgres, s3: S3Server, tmp_path: Path) -> Shared:
    return Shared(pg_cluster.create(), f"s3://{s3.bucket()}/bundles", s3.endpoint, tmp_path)


@pytest.fixture
def pair(shared: Shared) -> Iterator[tuple[Origin, Origin]]:
    """Origins A and B: A starts first (making the keys), B is given A's key files."""
    first = shared.origin("a")
    second = shared.origin("b")
    try:
        first.start()
        shared.token = (first.data / "admin-token").read_text().strip()
        second.data.mkdir(mode=0o700)
        for name in ("signing-key.pem", "secrets-key"):
            shutil.copy2(first.data / name, second.data / name)
        second.start()
        yield first, second
    finally:
        second.stop()
        first.stop()


def _node(shared: Shared, urls: str, name: str, poll_timeout_s: float | None = None) -> Node:
    """A node given `urls` (one origin, or several separated by commas), started; with
    `poll_timeout_s`, its long polls last that long instead of the harness's 2 s."""

    class Given:  # the harness's Node reads only `url` from its origin
        url = urls

    token = OriginClient(urls.split(",", maxsplit=1)[0], shared.token).create_token("node").token
    node = Node(Given(), token, shared.root / name, shared.root / f"{name}.log", None)  # type: ignore[arg-type]
    if poll_timeout_s is not None:
        node.environ["EDGE_POLL_TIMEOUT_S"] = str(poll_timeout_s)
    node.start()
    return node


def _kill(origin: Origin) -> None:
    """SIGKILL: no shutdown, no request finished, as when the machine dies."""
    assert origin.process is not None
    os.killpg(origin.process.pid, signal.SIGKILL)
    origin.process.wait(10)


def test_a_deploy_through_one_origin_reaches_a_node_long_polling_the_other(
    shared: Shared, pair: tuple[Origin, Origin]
) -> None:
    first, second = pair
    # Polls of 60 s: only B's wake-up by the database's notification can bring the change sooner.
    node = _node(shared, second.url, "node", poll_timeout_s=POLL_S)
    try:
        directory, version = write_version(shared.root / "fn", "one")
        shared.admin(first).deploy("hello", bundle.pack(directory))
        wait_for(lambda: node.serves(b"one"), WAIT_S, "the first version")
        # The node is long-polling B now; the deploy goes through A.
        directory, version = write_version(shared.root / "fn", "two")
        started = time.monotonic()
        result = shared.admin(first).deploy("hello", bundle.pack(directory))
        wait_for(lambda: node.serves(b"two"), WAIT_S, "the version deployed through the other origin")
        took = time.monotonic() - started
        print(f"deploy via A -> live on a node long-polling B: {took * 1000:.0f} ms")
        # About half a second on an idle machine (docs/perf/shared-origins.md); a loaded one is slower,
        # but a missed wake-up would take the whole poll.
        assert took < POLL_S / 3, f"propagation took {took:.2f} s"
        assert node.ready()["revision"] == result.revision
        assert [f.releases[0].version for f in shared.admin(second).functions()] == [version]
    finally:
        node.stop()


def test_a_node_fails_over_to_the_other_origin(shared: Shared, pair: tuple[Origin, Origin]) -> None:
    first, second = pair
    node = _node(shared, f"{first.url},{second.url}", "node")
    try:
        directory, _ = write_version(shared.root / "fn", "one")
        shared.admin(first).deploy("hello", bundle.pack(directory))
        wait_for(lambda: node.serves(b"one"), WAIT_S, "the first version")
        _kill(first)
        directory, version = write_version(shared.root / "fn", "two")
        result = shared.admin(second).deploy("hello", bundle.pack(directory))
        wait_for(lambda: node.serves(b"two"), WAIT_S, "the version deployed after the first origin died")
        assert node.ready()["revision"] == result.revision
        assert node.ready()["errors"] == []
        assert [f.releases[0].version for f in shared.admin(second).functions()] == [version]
        # The node reports to the origin that is left: B lists it live and at the new revision.
        wait_for(
            lambda: any(
                n.report is not None and n.report.applied_revision == result.revision
                for n in shared.admin(second).nodes().nodes
            ),
            WAIT_S,
            "the node's report to the origin that is left",
        )
    finally:
        node.stop()


def test_an_origin_killed_mid_deploy_loses_nothing(shared: Shared, pair: tuple[Origin, Origin]) -> None:
    first, second = pair
    node = _node(shared, f"{first.url},{second.url}", "node")
    try:
        directory, stable = write_version(shared.root / "fn", "one")
        before = shared.admin(second).deploy("hello", bundle.pack(directory))
        wait_for(lambda: node.serves(b"one"), WAIT_S, "the first version")
        directory, version = write_version(shared.root / "fn", "two")
        packed = bundle.pack(directory)
        # Half the bundle reaches A, then A dies: the client sees no answer.
        upload = http.client.HTTPConnection("127.0.0.1", first.port, timeout=10)
        upload.putrequest("POST", "/v1/functions/hello/versions")
        upload.putheader("Authorization", f"Bearer {shared.token}")
        upload.putheader("Content-Type", "application/gzip")
        upload.putheader("Content-Length", str(len(packed)))
        upload.endheaders()
        upload.send(packed[: len(packed) // 2])
        _kill(first)
        with pytest.raises((http.client.HTTPException, OSError)):
            upload.send(packed[len(packed) // 2 :])
            upload.getresponse().read()
        upload.close()
        # Nothing of it is visible: the revision and the releases are as before.
        functions = shared.admin(second).functions()
        assert [(f.name, f.releases[0].version, f.versions) for f in functions] == [("hello", stable, 1)]
        assert shared.admin(second).health().revision == before.revision
        # Sent again, to the origin that is left, it goes through and reaches the node.
        again = shared.admin(second).deploy("hello", packed)
        assert again.version == version
        wait_for(lambda: node.serves(b"two"), WAIT_S, "the deploy sent again")
        # A restarted on the same data serves the same state from the shared database and bucket.
        first.start()
        assert shared.admin(first).health().revision == again.revision
        assert OriginClient(first.url, shared.token).blob(version) == packed
    finally:
        node.stop()


def test_tokens_made_on_the_command_line_work_on_every_origin_and_other_keys_are_refused(
    shared: Shared, pair: tuple[Origin, Origin]
) -> None:
    first, second = pair
    made = run_edge(
        "origin",
        "token",
        "create",
        "--role",
        "admin",
        "--data",
        str(first.data),
        "--database",
        shared.database,
    )
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    assert [t.id for t in OriginClient(second.url, token).tokens()][-1] == made.stderr.split()[1].rstrip(":")
    stranger = shared.root / "c"
    result = run_edge(
        "origin",
        "--port",
        str(free_port()),
        "--data",
        str(stranger),
        "--database",
        shared.database,
        env=S3_ENV,
        timeout=60,
    )
    key = stranger / "signing-key.pem"
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == (
        f"error: {stranger}: cannot prepare the data directory: {key}: Expected the signing-key the"
        " database was first used with, got another; every origin on one database needs the same keys:"
        " copy signing-key.pem from the data directory of the origin that started first into this one\n"
    )
