"""The `edge` commands that talk to the origin, run as subprocesses; exact output."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from origin_harness import Origin, free_port, run_edge, running_origin, write_function

import edge.cli
from edge import bundle
from edge.control.client import OriginClient
from edge.control.messages import FunctionStatus, NodeInfo, NodeReport


def _when(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S")


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Origin]:
    """An origin of its own, so `edge ls` shows only this module's functions."""
    with running_origin(
        tmp_path_factory.mktemp("cli-origin") / "data", "--heartbeat-interval", "0.5"
    ) as origin:
        yield origin


def test_both_groups_are_registered() -> None:
    assert "edge.cli.origin" in edge.cli._GROUPS
    assert "edge.cli.deploy" in edge.cli._GROUPS


def test_deploy_ls_versions(fresh: Origin, tmp_path: Path) -> None:
    env = fresh.env()
    assert run_edge("ls", env=env).stdout == "no functions deployed\n"
    directory = write_function(tmp_path / "hello", manifest='routes = ["/hi", "/hey"]\n')
    version = bundle.digest(bundle.pack(directory))
    result = run_edge("deploy", str(directory), env=env)
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == f"deployed hello {version[:12]} at revision 1: {version[:12]} 100%\n"

    listing = run_edge("ls", "--json", env=env)
    functions = json.loads(listing.stdout)
    assert functions == [
        {
            "name": "hello",
            "releases": [{"version": version, "weight": 100}],
            "routes": ["/hi", "/hey"],
            "versions": 1,
            "updated_at": functions[0]["updated_at"],
            "failed": {},
        }
    ]
    updated = _when(functions[0]["updated_at"])
    assert run_edge("ls", env=env).stdout == (
        "NAME   RELEASES           VERSIONS  ROUTES    UPDATED (UTC)        FAILED TO LOAD\n"
        f"hello  {version[:12]} 100%  1         /hi /hey  {updated}  -\n"
    )

    (directory / "main.py").write_text("async def handler(request):\n    return 'v2'\n")
    second = bundle.digest(bundle.pack(directory))
    result = run_edge("deploy", str(directory), "--canary", "20", env=env)
    assert result.stdout == (
        f"deployed hello {second[:12]} at revision 2: {version[:12]} 80%, {second[:12]} 20%\n"
    )
    detail = json.loads(run_edge("versions", "hello", "--json", env=env).stdout)
    created = [_when(v["created_at"]) for v in detail["versions"]]
    sizes = [f"{v['size']} B" for v in detail["versions"]]
    assert run_edge("versions", "hello", env=env).stdout == (
        "VERSION       CREATED (UTC)        SIZE   TRAFFIC     FAILED TO LOAD\n"
        f"{second[:12]}  {created[0]}  {sizes[0]}  20% canary  -\n"
        f"{version[:12]}  {created[1]}  {sizes[1]}  80% stable  -\n"
    )
    result = run_edge("promote", "hello", env=env)
    assert result.stdout == f"promoted hello at revision 3: {second[:12]} 100%\n"
    result = run_edge("rollback", "hello", env=env)
    assert result.stdout == f"rolled back hello at revision 4: {version[:12]} 100%\n"
    result = run_edge("rollback", "hello", "--to", second[:6], "--json", env=env)
    assert json.loads(result.stdout) == {
        "name": "hello",
        "version": second,
        "revision": 5,
        "releases": [{"version": second, "weight": 100}],
        "took": [],
    }
    result = run_edge("purge", "hello", "--prefix", "/hi/", env=env)
    assert result.stdout == "purge order 1 for hello (prefix /hi/) at revision 6\n"
    result = run_edge("rm", "hello", env=env)
    assert result.stdout == "removed hello at revision 7\n"
    assert run_edge("ls", "--json", env=env).stdout == "[]\n"


TOKEN_FIX = (
    "pass an admin token with --token or EDGE_TOKEN (`edge up` keeps its admin token in"
    " .edge/up/origin/admin-token, `edge origin` in .edge/origin/admin-token); a node takes"
    " a node token with --token-file"
)


def test_errors(fresh: Origin, tmp_path: Path) -> None:
    directory = write_function(tmp_path / "broken", main="def handler(:\n")
    result = run_edge("deploy", str(directory), env=fresh.env())
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == "error: 400 bad request: main.py:1: SyntaxError: invalid syntax\n"

    (directory / "edge.toml").write_text("timeout_ms = 0\n")
    result = run_edge("deploy", str(directory), env=fresh.env())
    assert result.stderr == (
        f"error: {directory / 'edge.toml'}: Expected `int` from 1 to 900000, got 0 - at `$.timeout_ms`\n"
    )
    result = run_edge("deploy", str(tmp_path / "missing"), env=fresh.env())
    assert (
        result.stderr
        == f"error: {tmp_path / 'missing'}: not a directory; `edge deploy` takes a function directory\n"
    )

    result = run_edge("ls", env={"EDGE_ORIGIN": fresh.url})
    assert (result.returncode, result.stderr) == (
        1,
        f"error: 401 unauthorized: missing bearer token; {TOKEN_FIX}\n",
    )
    result = run_edge("ls", "--token", "nope", env={"EDGE_ORIGIN": fresh.url})
    assert result.stderr == f"error: 401 unauthorized: unknown bearer token; {TOKEN_FIX}\n"
    port = free_port()
    result = run_edge("ls", "--origin", f"http://127.0.0.1:{port}")
    assert (result.returncode, result.stderr) == (
        1,
        f"error: cannot reach the origin at http://127.0.0.1:{port}: Connection refused; is it running?"
        " Start one (`edge up`, or `edge origin`), or point EDGE_ORIGIN or --origin at it\n",
    )
    result = run_edge("versions", "nothing", env=fresh.env())
    assert result.stderr == "error: 404 not found: no function named `nothing`\n"
    node_token = fresh.token("node")
    result = run_edge("ls", "--token", node_token, env={"EDGE_ORIGIN": fresh.url})
    assert result.stderr == (
        "error: 403 forbidden: GET /v1/functions needs the admin role; this token has node; this token's"
        " role cannot do that: pass an admin token with --token or EDGE_TOKEN (`edge up` keeps its admin"
        " token in .edge/up/origin/admin-token)\n"
    )


class FakeNode:
    """Reports every 0.1 s; applies the origin's revision unless told to lag with an error."""

    def __init__(self, origin: Origin, node_id: str) -> None:
        self.client = OriginClient(origin.url, origin.token("node"))
        self.admin = origin.admin()
        self.node_id = node_id
        self.follow = True
        self.applied = 0
        self.purge_id = 0
        self.functions: list[FunctionStatus] = []
        self.client.register(
            NodeInfo(
                node_id=node_id,
                hostname=f"{node_id}.local",
                arch="x86_64",
                python="3.13.0",
                cpus=2,
                memory_bytes=1 << 30,
            )
        )
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            if self.follow:
                self.applied = self.admin.health().revision
                self.purge_id = max([p.id for p in self._purges()], default=0)
            self.client.report(
                NodeReport(
                    node_id=self.node_id,
                    applied_revision=self.applied,
                    applied_purge_id=self.purge_id,
                    functions=self.functions,
                )
            )
            self._stop.wait(0.1)

    def _purges(self) -> list:
        from edge.control.signing import open_state

        signed = self.client.sync(0, self.node_id, 0)
        return [] if signed is None else open_state(signed, self.client.key()).purges

    def __enter__(self) -> FakeNode:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


def _until_no_live_nodes(origin: Origin) -> None:
    deadline = time.monotonic() + 5
    while any(node.live for node in origin.admin().nodes().nodes):
        assert time.monotonic() < deadline
        time.sleep(0.1)


def test_deploy_wait_and_nodes(fresh: Origin, tmp_path: Path) -> None:
    env = fresh.env()
    _until_no_live_nodes(fresh)
    directory = write_function(tmp_path / "waiter")
    with FakeNode(fresh, "edge-1"):
        result = run_edge("deploy", str(directory), "--wait", env=env)
        assert result.returncode == 0, result.stderr
        revision = fresh.admin().health().revision
        assert result.stdout.splitlines()[1:] == [
            f"node edge-1 (edge-1.local): applied revision {revision}",
            f"1 node(s) applied revision {revision}",
        ]
        result = run_edge("purge", "waiter", "--tag", "t", "--wait", env=env)
        assert result.returncode == 0, result.stderr
        purge_id = result.stdout.split()[2]
        assert result.stdout.splitlines()[1:] == [
            f"node edge-1 (edge-1.local): applied purge order {purge_id}",
            f"1 node(s) applied purge order {purge_id}",
        ]
        listing = run_edge("nodes", env=env).stdout.splitlines()
        assert listing[0] == "NODE    HOSTNAME      LAST SEEN  REVISION  STATUS  ERRORS"
        assert listing[1].startswith("edge-1  edge-1.local  0s ago     ")
        assert listing[1].endswith("live    -")
    time.sleep(1.6)  # three 0.5 s heartbeats without a report
    assert run_edge("nodes", env=env).stdout.splitlines()[1].endswith("not live  -")
    # Not live, but seen within --seen-within: waited for, and it does not apply in time.
    result = run_edge(
        "deploy", str(write_function(tmp_path / "alone")), "--wait", "--timeout", "0.5", env=env
    )
    revision = fresh.admin().health().revision
    assert result.returncode == 1
    assert result.stdout.splitlines()[1].startswith(
        f"node edge-1 (edge-1.local): timed out after 0.5 s (at revision {revision - 1}, last seen "
    )
    assert result.stderr == f"error: revision {revision}: 1 of 1 node(s) did not converge: edge-1 timed out\n"
    time.sleep(1.1)
    result = run_edge(
        "deploy", str(write_function(tmp_path / "alone2")), "--wait", "--seen-within", "1", env=env
    )
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.splitlines()[1] == "no nodes seen within the last 1 s to wait for"


def test_deploy_wait_fails_with_the_node_error(fresh: Origin, tmp_path: Path) -> None:
    _until_no_live_nodes(fresh)
    directory = write_function(tmp_path / "failing")
    version = bundle.digest(bundle.pack(directory))
    with FakeNode(fresh, "edge-2") as node:
        node.functions = [
            FunctionStatus(
                name="failing", versions=[version], state="error", error="ImportError: No module named 'x'"
            )
        ]
        # edge-1 of the test before was last seen over 1 s ago: not waited for.
        result = run_edge(
            "deploy", str(directory), "--wait", "--timeout", "10", "--seen-within", "1", env=fresh.env()
        )
        assert result.returncode == 1
        revision = fresh.admin().health().revision
        assert result.stdout.splitlines()[1:] == [
            f"node edge-2 (edge-2.local): FAILED: failing {version[:12]}: ImportError: No module named 'x'"
        ]
        assert result.stderr == (
            f"error: revision {revision}: 1 of 1 node(s) did not converge: edge-2 failed\n"
        )
        node.functions = []
        node.follow = False
        result = run_edge("rollback", "failing", "--to", version, env=fresh.env())
        assert (
            result.stderr
            == f"error: 409 conflict: version {version[:12]} is already the current version of `failing`\n"
        )
        result = run_edge(
            "purge", "failing", "--all", "--wait", "--timeout", "0.5", "--seen-within", "1", env=fresh.env()
        )
        purge_id = fresh.admin().purge("failing", "all").id - 1
        assert result.returncode == 1
        assert result.stdout.splitlines()[1].startswith(
            "node edge-2 (edge-2.local): timed out after 0.5 s (at revision "
        )
        assert result.stderr == (
            f"error: purge order {purge_id}: 1 of 1 node(s) did not converge: edge-2 timed out\n"
        )
