"""Deploys while a node is under load: every request is answered 2xx, by one of the deployed versions."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from fleet_harness import Fleet, Hammer, run_edge, wait_for, write_version

MIN_REQUESTS = 5000


def test_deploys_under_load_answer_only_2xx(fleet: Fleet, tmp_path: Path) -> None:
    origin = fleet.start_origin()
    node = fleet.start_node()
    versions = [write_version(tmp_path, body) for body in ("v1", "v2", "v3")]
    assert run_edge("deploy", str(versions[0][0]), "--wait", env=origin.env()).returncode == 0
    steps = [
        ("deploy", str(versions[1][0]), "--wait"),
        ("deploy", str(versions[2][0]), "--canary", "50", "--wait"),
        ("promote", "hello", "--wait"),
        ("rollback", "hello", "--wait"),
        ("deploy", str(versions[2][0]), "--wait"),
    ]

    with Hammer(node.port, "/hello", threads=8, limit=25_000, seconds=90) as hammer:
        wait_for(lambda: hammer.count >= 100, 10, "the clients to get going")
        during = []
        for step in steps:
            before = hammer.count
            result = run_edge(*step, env=origin.env())
            assert (result.returncode, result.stderr) == (0, ""), (step, result)
            during.append(hammer.count - before)

    # Each switch happened under traffic: many requests were answered while each command ran.
    assert min(during) >= 100, during

    answers = Counter(answer for results in hammer.results for answer in results)
    assert set(answers) <= {(200, b"v1"), (200, b"v2"), (200, b"v3")}, answers
    assert set(answers) == {(200, b"v1"), (200, b"v2"), (200, b"v3")}, answers
    assert sum(answers.values()) >= MIN_REQUESTS
    assert node.ready()["functions"] == {"hello": {"state": "serving", "versions": [versions[2][1]]}}
