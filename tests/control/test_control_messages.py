"""The wire messages: field names and defaults are the contract in docs/spec/CONTROL.md."""

from __future__ import annotations

import msgspec

from edge.control.messages import FunctionStatus, NodeInfo, NodeReport, Registered


def test_node_info_wire_form() -> None:
    old = (
        b'{"node_id":"n1","hostname":"pi","arch":"aarch64","python":"3.13.1","cpus":4,'
        b'"memory_bytes":1024,"interfaces":[{"name":"eth0","addresses":["10.0.0.2/24"]}],"labels":{}'
    )
    raw = old + b',"public_key":"AAAA"}'
    info = msgspec.json.decode(raw, type=NodeInfo)
    assert msgspec.json.encode(info) == raw
    # A node from before secrets sends no key.
    assert msgspec.json.decode(old + b"}", type=NodeInfo).public_key == ""


def test_report_defaults() -> None:
    report = msgspec.json.decode(b'{"node_id":"n1","applied_revision":4}', type=NodeReport)
    assert report == NodeReport(node_id="n1", applied_revision=4, applied_purge_id=0, functions=[], errors=[])
    assert msgspec.json.decode(b'{"name":"f"}', type=FunctionStatus) == FunctionStatus(
        name="f", versions=[], state="serving", error=None
    )


def test_registered() -> None:
    assert msgspec.json.encode(Registered(node_id="n1", heartbeat_interval_s=10.0)) == (
        b'{"node_id":"n1","heartbeat_interval_s":10.0}'
    )
