"""The node side of the API: key, register, long-poll sync, signatures, blobs, reports, liveness."""

from __future__ import annotations

import base64
import threading
import time
from pathlib import Path

import pytest
from origin_harness import Origin, running_origin, write_function

from edge import bundle
from edge.control.client import OriginClient, OriginError
from edge.control.messages import FunctionStatus, Interface, NodeInfo, NodeReport, SignedState
from edge.control.signing import SignatureError, open_state


def _info(node_id: str) -> NodeInfo:
    return NodeInfo(
        node_id=node_id,
        hostname=f"host-{node_id}",
        arch="aarch64",
        python="3.13.0",
        cpus=2,
        memory_bytes=512 * 1024 * 1024,
        interfaces=[Interface(name="eth0", addresses=["192.0.2.7/24", "2001:db8::7/64"])],
        labels={"region": "eu"},
    )


@pytest.fixture(scope="module")
def node(origin: Origin) -> OriginClient:
    client = origin.client(origin.token("node"))
    registered = client.register(_info("sync-node"))
    assert (registered.node_id, registered.heartbeat_interval_s) == ("sync-node", 1.0)
    return client


def _deploy(origin: Origin, tmp_path: Path, name: str, n: int) -> int:
    data = bundle.pack(
        write_function(
            tmp_path / f"{name}{n}" / name, main=f"N = {n}\n\n\ndef handler(request):\n    return N\n"
        )
    )
    return origin.admin().deploy(name, data).revision


def test_key_is_the_raw_ed25519_key(node: OriginClient, origin: Origin) -> None:
    key = node.key()
    assert len(base64.b64decode(key)) == 32
    assert origin.admin().key() == key


def test_sync_answers_at_once_when_behind(origin: Origin, node: OriginClient, tmp_path: Path) -> None:
    revision = _deploy(origin, tmp_path, "syncfn", 1)
    started = time.monotonic()
    signed = node.sync(revision - 1, "sync-node", timeout=10)
    assert time.monotonic() - started < 2
    assert signed is not None
    state = open_state(signed, node.key())
    assert state.revision == revision
    assert "syncfn" in [f.name for f in state.functions]


def test_sync_waits_when_up_to_date(origin: Origin, node: OriginClient) -> None:
    revision = origin.admin().health().revision
    started = time.monotonic()
    assert node.sync(revision, "sync-node", timeout=1) is None
    assert 0.9 <= time.monotonic() - started < 3


def test_sync_wakes_early_on_a_deploy(origin: Origin, node: OriginClient, tmp_path: Path) -> None:
    revision = origin.admin().health().revision
    result: list[SignedState | None] = []
    poll = threading.Thread(target=lambda: result.append(node.sync(revision, "sync-node", timeout=20)))
    started = time.monotonic()
    poll.start()
    time.sleep(0.3)
    new_revision = _deploy(origin, tmp_path, "wakefn", 1)
    poll.join(10)
    assert time.monotonic() - started < 5
    assert result[0] is not None
    assert open_state(result[0], node.key()).revision == new_revision


def test_signature_fails_on_a_tampered_payload(origin: Origin, node: OriginClient, tmp_path: Path) -> None:
    _deploy(origin, tmp_path, "signedfn", 1)
    signed = node.sync(0, "sync-node", timeout=0)
    assert signed is not None
    payload = base64.b64decode(signed.payload).replace(b"signedfn", b"signedfm")
    tampered = SignedState(
        payload=base64.b64encode(payload).decode(), signature=signed.signature, key=signed.key
    )
    with pytest.raises(SignatureError, match=r"^signature does not match the payload and key$"):
        open_state(tampered, node.key())
    other = base64.b64encode(bytes(32)).decode()
    with pytest.raises(SignatureError) as caught:
        open_state(signed, other)
    assert str(caught.value) == f"state is signed with key {signed.key!r}, expected the pinned key {other!r}"


def test_sync_from_an_unregistered_node(origin: Origin, node: OriginClient) -> None:
    with pytest.raises(OriginError) as caught:
        node.sync(0, "stranger", timeout=0)
    assert str(caught.value) == (
        "404 not found: node `stranger` is not registered; POST /v1/nodes/register first"
    )


def test_sync_rejects_bad_queries(node: OriginClient) -> None:
    with pytest.raises(OriginError) as caught:
        node.request("GET", "/v1/sync?revision=abc")
    assert str(caught.value) == "400 bad request: query `revision`: Expected a number >= 0, got 'abc'"


def test_blobs_by_digest(origin: Origin, node: OriginClient, tmp_path: Path) -> None:
    data = bundle.pack(write_function(tmp_path / "blobfn"))
    origin.admin().deploy("blobfn", data)
    assert node.blob(bundle.digest(data)) == data
    with pytest.raises(OriginError) as caught:
        node.blob("a" * 64)
    assert str(caught.value) == f"404 not found: no blob {'a' * 64}"
    with pytest.raises(OriginError) as caught:
        node.blob("nothex")
    assert str(caught.value) == "400 bad request: blob digest: Expected 64 lowercase hex digits, got 'nothex'"


def test_reports_show_in_nodes(origin: Origin, node: OriginClient) -> None:
    report = NodeReport(
        node_id="sync-node",
        applied_revision=3,
        applied_purge_id=2,
        functions=[
            FunctionStatus(name="syncfn", versions=["ab" * 32], state="error", error="ImportError: x")
        ],
        errors=["disk full"],
    )
    node.report(report)
    listing = origin.admin().nodes()
    mine = next(n for n in listing.nodes if n.info.node_id == "sync-node")
    assert mine.info == _info("sync-node")
    assert mine.report == report
    assert mine.live
    assert listing.heartbeat_interval_s == 1.0


def test_report_errors(node: OriginClient) -> None:
    with pytest.raises(OriginError) as caught:
        node.report(NodeReport(node_id="stranger", applied_revision=1))
    assert str(caught.value) == (
        "404 not found: node `stranger` is not registered; POST /v1/nodes/register first"
    )
    with pytest.raises(OriginError) as caught:
        node.request("POST", "/v1/nodes/sync-node/report", b'{"node_id": "other", "applied_revision": 1}')
    assert str(caught.value) == (
        "400 bad request: request body: Expected `$.node_id` 'sync-node' as in the URL, got 'other'"
    )
    with pytest.raises(OriginError) as caught:
        node.request(
            "POST", "/v1/nodes/sync-node/report", b'{"node_id": "sync-node", "applied_revision": "x"}'
        )
    assert str(caught.value) == (
        "400 bad request: request body: Expected `int`, got `str` - at `$.applied_revision`"
    )
    with pytest.raises(OriginError) as caught:
        node.register(NodeInfo(node_id="../x", hostname="h", arch="a", python="3.13", cpus=1, memory_bytes=1))
    assert str(caught.value) == (
        "400 bad request: request body: `$.node_id`: Expected 1-128 letters, digits, '.', '_' or '-'"
        " (not first), got '../x'"
    )


def test_a_silent_node_stops_being_live(tmp_path: Path) -> None:
    with running_origin(tmp_path / "data", "--heartbeat-interval", "0.2") as origin:
        node = origin.client(origin.token("node"))
        node.register(_info("quiet"))
        assert [n.live for n in origin.admin().nodes().nodes] == [True]
        time.sleep(0.8)
        assert [n.live for n in origin.admin().nodes().nodes] == [False]
        node.report(NodeReport(node_id="quiet", applied_revision=0))
        assert [n.live for n in origin.admin().nodes().nodes] == [True]
