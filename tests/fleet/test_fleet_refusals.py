"""What a node refuses: a version that fails to import, a tampered bundle, a state signed by another key."""

from __future__ import annotations

import socket
import time
from pathlib import Path

from fleet_harness import Fleet, other_public_key, run_edge, wait_for, write_version

from edge import bundle
from edge.control.client import OriginClient

BROKEN = """\
raise RuntimeError("boom at import")

async def handler(request):
    return 'never'
"""


def test_version_that_fails_to_import_is_not_switched_to(fleet: Fleet, tmp_path: Path) -> None:
    origin = fleet.start_origin()
    node = fleet.start_node()
    good, v1 = write_version(tmp_path, "v1")
    broken, v2 = write_version(tmp_path, "broken", code=BROKEN)
    assert run_edge("deploy", str(good), "--wait", env=origin.env()).returncode == 0

    result = run_edge("deploy", str(broken), "--wait", env=origin.env())

    message = "importing module 'main' raised RuntimeError: boom at import"
    assert result.returncode == 1
    assert result.stdout == (
        f"deployed hello {v2[:12]} at revision 2: {v2[:12]} 100%\n"
        f"node {node.node_id} ({socket.gethostname()}): FAILED: hello {v2[:12]}: {message}\n"
    )
    assert result.stderr == f"error: revision 2: 1 of 1 node(s) did not converge: {node.node_id} failed\n"
    # The node applied the revision but kept serving the version that works.
    assert node.body() == b"v1"
    ready = node.ready()
    assert ready["functions"] == {"hello": {"state": "serving", "versions": [v1]}}
    assert ready["revision"] == 2
    assert ready["errors"] == [f"function hello: version {v2[:12]}: {message}"]
    report = origin.reported(node.node_id, 2)
    assert report["functions"] == [{"name": "hello", "versions": [v2], "state": "error", "error": message}]
    # A node restarted now serves its last-known-good version, not the broken one.
    node.stop()
    node.start()
    assert node.body() == b"v1"
    assert node.ready()["functions"] == {"hello": {"state": "serving", "versions": [v1]}}


def test_deploying_a_fixed_version_clears_the_error(fleet: Fleet, tmp_path: Path) -> None:
    origin = fleet.start_origin()
    node = fleet.start_node()
    good, _ = write_version(tmp_path, "v1")
    broken, _ = write_version(tmp_path, "broken", code=BROKEN)
    fixed, v3 = write_version(tmp_path, "v3")
    assert run_edge("deploy", str(good), "--wait", env=origin.env()).returncode == 0
    assert run_edge("deploy", str(broken), "--wait", env=origin.env()).returncode == 1

    result = run_edge("deploy", str(fixed), "--wait", env=origin.env())

    assert (result.returncode, result.stderr) == (0, "")
    assert node.body() == b"v3"
    assert node.ready()["functions"] == {"hello": {"state": "serving", "versions": [v3]}}
    report = origin.reported(node.node_id, 3)
    assert report["functions"] == [{"name": "hello", "versions": [v3], "state": "serving", "error": None}]
    # The node has no problem left: `edge nodes` must not keep showing the old one in its ERRORS column.
    assert report["errors"] == []


def test_bundle_tampered_with_in_the_blob_store_is_refused(fleet: Fleet, tmp_path: Path) -> None:
    origin = fleet.start_origin()
    node = fleet.start_node()
    first, v1 = write_version(tmp_path, "v1")
    second, v2 = write_version(tmp_path, "v2")
    assert run_edge("deploy", str(first), "--wait", env=origin.env()).returncode == 0
    node.stop()
    assert run_edge("deploy", str(second), env=origin.env()).returncode == 0
    # Swap the stored bytes for a valid bundle of other code, as an attacker with disk access would.
    evil = bundle.pack(write_version(tmp_path, "evil")[0])
    blob = origin.blob_path(v2)
    assert blob.read_bytes() == bundle.pack(second)
    blob.write_bytes(evil)

    node.start()

    wait_for(lambda: node.ready()["revision"] == 2, 15, "the node to apply revision 2")
    message = f"blob {v2}: the downloaded bytes have sha256 {bundle.digest(evil)}"
    ready = node.ready()
    assert ready["functions"] == {"hello": {"state": "serving", "versions": [v1]}}
    assert ready["errors"] == [f"function hello: version {v2[:12]}: {message}"]
    assert node.body() == b"v1"
    assert not (node.data / "bundles" / v2).exists()
    report = origin.reported(node.node_id, 2)
    assert report["functions"] == [{"name": "hello", "versions": [v2], "state": "error", "error": message}]
    assert report["errors"] == [f"function hello: version {v2[:12]}: {message}"]


def test_node_pinned_to_another_key_refuses_the_origin_states(fleet: Fleet, tmp_path: Path) -> None:
    origin = fleet.start_origin()
    directory, _ = write_version(tmp_path, "v1")
    assert run_edge("deploy", str(directory), env=origin.env()).returncode == 0
    origin_key = OriginClient(origin.url, origin.node_token()).key()
    pinned = other_public_key()

    node = fleet.start_node(origin_key=pinned)

    message = f"sync: state is signed with key {origin_key!r}, expected the pinned key {pinned!r}"
    wait_for(lambda: node.ready()["errors"], 10, "the node to show a sync error")
    refused = time.monotonic()
    ready = node.ready()
    assert (ready["functions"], ready["revision"], ready["errors"][0]) == ({}, 0, message)
    assert set(ready["errors"]) == {message}
    reply = node.get("/hello")
    assert (reply.status, reply.json()["error"]) == (404, "no function serves /hello")
    assert (node.data / "origin-key").read_text() == pinned + "\n"
    assert not (node.data / "applied.json").exists()
    assert f" ERROR edge.sync: {message}\n" in node.output()
    report = origin.reported(node.node_id, 0, timeout=15)
    waited = time.monotonic() - refused
    assert (report["applied_revision"], report["functions"], report["errors"][0]) == (0, [], message)
    # CONTROL.md, step 6: a node reports at once after failing to apply a revision, and every
    # heartbeat_interval_s (1 s here) as a heartbeat; so the origin hears of the refusal quickly.
    assert waited < 3.0, f"the node reported the refused state {waited:.1f} s after refusing it"
