"""The control plane tells the truth: `--wait` over every node seen lately, failures marked where
they happened, errors that clear, failed versions not imported again, no paths in 503 bodies, and
routes that two functions claim."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

from fleet_harness import REPO, Fleet, Node, clean_env, run_edge, wait_for, write_version

BROKEN = """\
raise RuntimeError("boom at import")

async def handler(request):
    return 'never'
"""

# The traceback line the guest logs each time the broken module is imported.
IMPORTED = 'raise RuntimeError("boom at import")'
MESSAGE = "importing module 'main' raised RuntimeError: boom at import"


def _line(node: Node, rest: str) -> str:
    return f"node {node.node_id} ({socket.gethostname()}): {rest}"


def test_wait_includes_a_node_that_is_restarting(fleet: Fleet, tmp_path: Path) -> None:
    origin = fleet.start_origin()
    node = fleet.start_node()
    first, _ = write_version(tmp_path, "v1")
    assert run_edge("deploy", str(first), "--wait", env=origin.env()).returncode == 0
    node.stop()
    wait_for(lambda: not origin.live_nodes(), 10, "the stopped node to be no longer live")
    second, _ = write_version(tmp_path, "v2")

    # Not live now, but registered and seen within --seen-within: `--wait` waits for it.
    deploy = subprocess.Popen(
        [sys.executable, "-m", "edge", "deploy", str(second), "--wait", "--timeout", "60"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env=clean_env(origin.env()),
    )
    try:
        node.start()
        stdout, stderr = deploy.communicate(timeout=90)
    finally:
        deploy.kill()

    assert (deploy.returncode, stderr) == (0, "")
    assert stdout.splitlines()[1:] == [_line(node, "applied revision 2"), "1 node(s) applied revision 2"]
    assert node.body() == b"v2"


def test_failed_import_is_reported_rolled_back_marked_and_cleared(fleet: Fleet, tmp_path: Path) -> None:
    origin = fleet.start_origin()
    nodes = sorted([fleet.start_node(), fleet.start_node()], key=lambda node: node.node_id)
    ids = [node.node_id for node in nodes]
    good, v1 = write_version(tmp_path, "v1")
    broken, v2 = write_version(tmp_path, "broken", code=BROKEN)
    assert run_edge("deploy", str(good), "--wait", env=origin.env()).returncode == 0

    result = run_edge("deploy", str(broken), "--wait", "--rollback-on-failure", env=origin.env())

    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        f"deployed hello {v2[:12]} at revision 2: {v2[:12]} 100%",
        *(_line(node, f"FAILED: hello {v2[:12]}: {MESSAGE}") for node in nodes),
    ]
    assert result.stderr == (
        f"error: revision 2: 2 of 2 node(s) did not converge: {ids[0]} failed, {ids[1]} failed;"
        f" rolled back hello to {v1[:12]} 100% at revision 3 (--rollback-on-failure)\n"
    )
    assert [(r.version, r.weight) for r in origin.admin().function("hello").releases] == [(v1, 100)]

    # Where it failed stays on record in `edge ls` and `edge versions`.
    listing = json.loads(run_edge("ls", "--json", env=origin.env()).stdout)
    assert listing[0]["failed"] == {v2: ids}
    versions = run_edge("versions", "hello", env=origin.env()).stdout.splitlines()
    assert versions[0].endswith("TRAFFIC      FAILED TO LOAD")
    assert versions[1].startswith(v2[:12]) and versions[1].endswith(f"-            on {ids[0]}, {ids[1]}")
    assert versions[2].startswith(v1[:12]) and versions[2].endswith("100% stable  -")
    ls = run_edge("ls", env=origin.env()).stdout.splitlines()
    assert ls[1].endswith(f"{v2[:12]} on {ids[0]}, {ids[1]}")

    # Serving what is asked again (revision 3): `edge nodes` has no error left.
    for node in nodes:
        report = origin.reported(node.node_id, 3)
        assert report["errors"] == []
        assert report["functions"] == [{"name": "hello", "versions": [v1], "state": "serving", "error": None}]
        assert node.body() == b"v1"
    rows = run_edge("nodes", env=origin.env()).stdout.splitlines()[1:]
    assert [row.rsplit("  ", 1)[1] for row in rows] == ["-", "-"]


def test_a_failed_version_is_imported_once_until_deployed_again(fleet: Fleet, tmp_path: Path) -> None:
    origin = fleet.start_origin()
    node = fleet.start_node()
    good, _ = write_version(tmp_path, "v1")
    broken, v2 = write_version(tmp_path, "broken", code=BROKEN)
    other, _ = write_version(tmp_path, "other", name="other")
    assert run_edge("deploy", str(good), "--wait", env=origin.env()).returncode == 0
    assert run_edge("deploy", str(broken), "--wait", env=origin.env()).returncode == 1

    # New revisions that do not touch `hello` (each makes the node apply the whole state).
    for order in range(3):
        result = run_edge("purge", "hello", "--all", "--wait", env=origin.env())
        assert (result.returncode, result.stderr) == (0, ""), (order, result)
    assert run_edge("deploy", str(other), "--wait", env=origin.env()).returncode == 0

    assert node.output().count(IMPORTED) == 1
    # Still reported, without importing it again.
    ready = node.ready()
    assert ready["errors"] == [f"function hello: version {v2[:12]}: {MESSAGE}"]
    assert node.body() == b"v1"

    # Deployed again (after a rollback): tried again.
    assert run_edge("rollback", "hello", "--wait", env=origin.env()).returncode == 0
    assert node.ready()["errors"] == []
    assert run_edge("deploy", str(broken), "--wait", env=origin.env()).returncode == 1
    assert node.output().count(IMPORTED) == 2


def test_a_503_body_has_no_server_paths(fleet: Fleet, tmp_path: Path) -> None:
    origin = fleet.start_origin()
    node = fleet.start_node()
    code = """\
        open(__file__ + ".missing")

        async def handler(request):
            return 'never'
        """
    directory, version = write_version(tmp_path, "pathy", name="pathy", code=code)
    assert run_edge("deploy", str(directory), "--wait", env=origin.env()).returncode == 1

    reply = node.get("/pathy")

    assert reply.status == 503
    assert reply.json()["error"] == (
        "function pathy failed to load: importing module 'main' raised FileNotFoundError:"
        " [Errno 2] No such file or directory: 'main.py.missing'"
    )
    # The node's log and its report to the origin keep the whole text.
    bundle = (node.data / "bundles" / version).resolve()
    full = f"[Errno 2] No such file or directory: '{bundle}/main.py.missing'"
    assert origin.reported(node.node_id, 1)["functions"][0]["error"].endswith(full)
    assert full in node.output()


def test_a_route_two_functions_claim_needs_force(fleet: Fleet, tmp_path: Path) -> None:
    origin = fleet.start_origin()
    node = fleet.start_node()
    hello, _ = write_version(tmp_path, "hello")
    hi, _ = write_version(tmp_path, "hi", name="hi")
    (hi / "edge.toml").write_text('name = "hi"\nroutes = ["/hello/"]\n')
    assert run_edge("deploy", str(hello), "--wait", env=origin.env()).returncode == 0

    result = run_edge("deploy", str(hi), "--wait", env=origin.env())

    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == (
        "error: 409 conflict: /hello is claimed by `hi` by its `routes` in edge.toml and by `hello`"
        " by its own name: change `routes` in edge.toml, or deploy with --force to let `hi` take the"
        " route from the function deployed before it\n"
    )
    assert [f.name for f in origin.admin().functions()] == ["hello"]

    result = run_edge("deploy", str(hi), "--force", "--wait", env=origin.env())

    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.splitlines()[1] == "hi took route /hello from `hello` by its own name (--force)"
    assert node.body("/hello") == b"hi"
    assert node.body("/hello/x") == b"hi"
    assert node.body("/hi") == b"hi"

    # `hello` deployed again, forced: the newest deploy owns the route.
    (hello / "main.py").write_text("async def handler(request):\n    return 'hello again'\n")
    assert run_edge("deploy", str(hello), "--wait", env=origin.env()).returncode == 1
    result = run_edge("deploy", str(hello), "--force", "--wait", env=origin.env())
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.splitlines()[1] == (
        "hello took route /hello from `hi` by its `routes` in edge.toml (--force)"
    )
    assert node.body("/hello") == b"hello again"
    assert node.body("/hi") == b"hi"
