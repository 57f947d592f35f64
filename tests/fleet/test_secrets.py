"""Secrets over a real origin, real nodes and the CLI: set -> visible to the function (either
isolation mode) -> absent from the bundle, the origin's database, applied.json, logs, the sync
payload and every listing; rotation without a redeploy (requests in flight finish on the old
value); the node's key out of functions' reach; a node's registered key pinned."""

from __future__ import annotations

import base64
import json
import socket
import subprocess
import sys
import threading
from pathlib import Path

import msgspec
from fleet_harness import REPO, Fleet, Node, clean_env, request, wait_for

from edge.control.client import OriginClient, OriginError
from edge.control.messages import NodeInfo, SignedState
from edge.control.sealing import NodeKey
from loadtest._servers import free_port

CODE = """\
import asyncio
import os


async def handler(request):
    hold = request.query.get("hold", [""])[0]
    if hold:  # stay in flight until the test lets go
        reader, writer = await asyncio.open_connection("127.0.0.1", int(hold))
        writer.write(b"in flight")
        await writer.drain()
        await reader.read(1)
        writer.close()
    path = request.query.get("open", [""])[0]
    if path:
        try:
            with open(path, "rb") as file:
                return {"read": file.read().decode(errors="replace")}
        except OSError as exc:
            return {"refused": type(exc).__name__}
    return {"API_KEY": os.environ.get("API_KEY"), "PLAIN": os.environ.get("PLAIN")}
"""

MANIFEST = """\
name = "{name}"
isolation = "{isolation}"

[env]
PLAIN = "plain value"
API_KEY = "the edge.toml value the secret overrides"
"""


def _function(root: Path, name: str, isolation: str = "interpreter") -> Path:
    directory = root / name
    directory.mkdir(parents=True)
    (directory / "edge.toml").write_text(MANIFEST.format(name=name, isolation=isolation))
    (directory / "main.py").write_text(CODE)
    return directory


def _edge(*args: str, env: dict[str, str], stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    """`edge ARGS...` with `stdin` piped in (bytes out, to compare exactly)."""
    return subprocess.run(
        [sys.executable, "-m", "edge", *args],
        input=stdin if stdin is not None else b"",
        capture_output=True,
        env=clean_env(env),
        cwd=REPO,
        timeout=60,
        check=False,
    )


def _set(origin_env: dict[str, str], name: str, value: bytes, *extra: str) -> str:
    result = _edge("secret", "set", name, "API_KEY", *extra, env=origin_env, stdin=value)
    assert (result.returncode, result.stderr) == (0, b""), result
    return result.stdout.decode()


def _secret_of(node: Node, path: str) -> object:
    reply = node.get(path)
    return reply.json()["API_KEY"] if reply.status == 200 else reply


def _everything_a_value_must_not_be_in(fleet: Fleet, node: Node, admin_port: int) -> dict[str, bytes]:
    """Every file, log and listing the issue names, as bytes."""
    origin = fleet.origin
    assert origin is not None
    env = origin.env()
    seen = {
        "applied.json": (node.data / "applied.json").read_bytes(),
        "node log": node.log.read_bytes(),
        "origin log": origin.log.read_bytes(),
        "/_edge/ready": node.get("/_edge/ready").body,
    }
    for name in ("origin.db", "origin.db-wal"):
        path = origin.data / name
        seen[name] = path.read_bytes() if path.exists() else b""
    for blob in (origin.data / "blobs").rglob("*"):
        if blob.is_file():
            seen[f"blob {blob.name[:12]}"] = blob.read_bytes()
    for bundle in (node.data / "blobs").iterdir():
        seen[f"node blob {bundle.name[:12]}"] = bundle.read_bytes()
    for args in (["ls"], ["secret", "ls", "secrets"]):
        result = _edge(*args, env=env)
        assert result.returncode == 0, result
        seen[f"edge {' '.join(args)}"] = result.stdout + result.stderr
    # What `edge ls --json`, `edge versions --json`, `edge nodes --json` and `edge secret ls --json` print.
    admin = origin.admin()
    seen["functions"] = msgspec.json.encode(admin.functions())
    seen["function"] = msgspec.json.encode(admin.function("secrets"))
    seen["nodes"] = msgspec.json.encode(admin.nodes())
    seen["secrets"] = msgspec.json.encode(admin.secrets("secrets"))
    # What the sync route sends this node: the signed payload (decoded) and the whole answer.
    node_token = node.token
    client = OriginClient(origin.url, node_token, timeout=10)
    signed = client.sync(0, node.node_id, timeout=1)
    assert signed is not None
    seen["sync payload"] = base64.b64decode(signed.payload)
    _, raw = client.request("GET", f"/v1/sync?revision=0&node_id={node.node_id}&timeout=1")
    # The value travels, sealed to this node, beside the signed payload.
    assert json.loads(raw)["secrets"]["node_id"] == node.node_id
    seen["sync answer"] = raw
    seen["metrics"] = request(admin_port, "/metrics").body
    return seen


def _start_node(fleet: Fleet, admin_port: int) -> Node:
    """A node whose admin listener is on `admin_port` (its `/metrics` is checked too)."""
    origin = fleet.origin
    assert origin is not None
    node = Node(origin, origin.node_token(), fleet.root / "node", fleet.root / "node.log", None)
    node.environ["EDGE_ADMIN_PORT"] = str(admin_port)
    fleet.nodes.append(node)
    node.start()
    wait_for(lambda: node.node_id in origin.live_nodes(), 20, "the node to register")
    return node


def test_a_secret_reaches_the_function_and_nowhere_else(fleet: Fleet, tmp_path: Path) -> None:
    origin = fleet.start_origin()
    admin_port = free_port()
    node = _start_node(fleet, admin_port)
    env = origin.env()
    value = b"s3cret-" + base64.b32encode(socket.gethostname().encode() + b"x" * 8)[:16]

    # Set before the first deploy: the first version starts with it. One trailing newline goes.
    assert _set(env, "secrets", value + b"\n") == (
        f"set secret API_KEY of secrets ({len(value)} bytes) at revision 1\n"
    )
    deploy = _edge("deploy", str(_function(tmp_path, "secrets")), "--wait", env=env)
    assert deploy.returncode == 0, deploy.stderr
    assert node.get("/secrets").json() == {"API_KEY": value.decode(), "PLAIN": "plain value"}

    listing = _edge("secret", "ls", "secrets", env=env).stdout.decode().splitlines()
    assert listing[0].split() == ["KEY", "SIZE", "UPDATED", "(UTC)", "NOTE"]
    assert listing[1].split()[:3] == ["API_KEY", str(len(value)), "B"]
    assert listing[1].endswith("overrides [env]")
    assert len(listing) == 2

    for where, data in _everything_a_value_must_not_be_in(fleet, node, admin_port).items():
        assert value not in data, where
    assert (node.data / "node-key").stat().st_mode & 0o777 == 0o600
    assert (origin.data / "secrets-key").stat().st_mode & 0o777 == 0o600


def test_rotation_reaches_the_node_without_a_redeploy_and_requests_in_flight_finish(
    fleet: Fleet, tmp_path: Path
) -> None:
    origin = fleet.start_origin()
    node = fleet.start_node()
    env = origin.env()
    _set(env, "secrets", b"first")
    assert _edge("deploy", str(_function(tmp_path, "secrets")), "--wait", env=env).returncode == 0
    version = origin.admin().function("secrets").releases
    assert node.get("/secrets").json()["API_KEY"] == "first"

    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        held: list[object] = []
        thread = threading.Thread(target=lambda: held.append(node.get(f"/secrets?hold={port}")))
        thread.start()
        server.settimeout(20)
        connection, _ = server.accept()  # the request is in the function now
        with connection:
            assert connection.recv(64) == b"in flight"
            out = _set(env, "secrets", b"second", "--wait")
            assert out.splitlines()[0] == "set secret API_KEY of secrets (6 bytes) at revision 3"
            assert out.splitlines()[-1] == "1 node(s) applied revision 3"
            # New requests reach isolates started with the new value while the old one still works.
            assert node.get("/secrets").json()["API_KEY"] == "second"
            connection.sendall(b"go")
        thread.join(20)
    assert [reply.json()["API_KEY"] for reply in held] == ["first"]  # type: ignore[attr-defined]
    assert origin.admin().function("secrets").releases == version  # no new version

    removed = _edge("secret", "rm", "secrets", "API_KEY", "--wait", env=env)
    assert removed.stdout.decode().splitlines() == [
        "removed secret API_KEY of secrets at revision 4",
        f"node {node.node_id} ({socket.gethostname()}): applied revision 4",
        "1 node(s) applied revision 4",
    ]
    # Without the secret the function sees its [env] value again.
    assert node.get("/secrets").json()["API_KEY"] == "the edge.toml value the secret overrides"


NEEDS_IT = """\
import os

KEY = os.environ["API_KEY"]  # fails at import without its secret


def handler(request):
    return KEY
"""


def test_a_version_that_failed_for_want_of_its_secret_loads_once_it_is_set(
    fleet: Fleet, tmp_path: Path
) -> None:
    origin = fleet.start_origin()
    node = fleet.start_node()
    env = origin.env()
    directory = tmp_path / "needs"
    directory.mkdir()
    (directory / "edge.toml").write_text('name = "needs"\n')
    (directory / "main.py").write_text(NEEDS_IT)
    deploy = _edge("deploy", str(directory), "--wait", env=env)
    assert deploy.returncode == 1
    assert "KeyError: 'API_KEY'" in deploy.stdout.decode()
    assert node.get("/needs").status == 503
    out = _set(env, "needs", b"now here", "--wait")
    assert out.splitlines()[-1] == "1 node(s) applied revision 2"
    assert node.body("/needs") == b"now here"


def test_a_node_restarted_while_the_origin_is_away_still_gives_functions_their_secrets(
    fleet: Fleet, tmp_path: Path
) -> None:
    origin = fleet.start_origin()
    node = fleet.start_node()
    env = origin.env()
    _set(env, "secrets", b"kept sealed")
    assert _edge("deploy", str(_function(tmp_path, "secrets", "process")), "--wait", env=env).returncode == 0
    assert node.get("/secrets").json()["API_KEY"] == "kept sealed"
    origin.stop()
    node.stop()
    node.start()
    assert node.get("/secrets").json()["API_KEY"] == "kept sealed"
    applied = json.loads((node.data / "applied.json").read_bytes())
    assert applied["functions"][0]["secrets"] == ["API_KEY"]
    assert set(applied["sealed_secrets"]) == {"node_id", "box", "signature"}

    # Kept secrets that do not open (here: gone): the node asks the origin for the whole state again.
    origin.start()
    node.stop()
    applied = json.loads((node.data / "applied.json").read_bytes())
    applied["sealed_secrets"] = None
    (node.data / "applied.json").write_text(json.dumps(applied))
    node.start()
    wait_for(lambda: node.body("/secrets"), 20, "the function to serve again")
    assert node.get("/secrets").json()["API_KEY"] == "kept sealed"


def test_functions_of_either_isolation_mode_cannot_read_the_node_key(fleet: Fleet, tmp_path: Path) -> None:
    origin = fleet.start_origin()
    node = fleet.start_node()
    env = origin.env()
    for name, isolation in (("inproc", "interpreter"), ("child", "process")):
        _set(env, name, b"v")
        assert _edge("deploy", str(_function(tmp_path, name, isolation)), "--wait", env=env).returncode == 0
    key = node.data.resolve() / "node-key"
    # In the node's process, the interpreter's guard refuses the node's data directory.
    assert node.get(f"/inproc?open={key}").json() == {"refused": "PermissionError"}
    # A process child runs under its own uid in its own mount view: the directory is not even there.
    assert node.get(f"/child?open={key}").json() == {"refused": "FileNotFoundError"}
    assert node.get("/child").json()["API_KEY"] == "v"


def test_a_registered_node_key_is_pinned_until_an_admin_forgets_it(fleet: Fleet) -> None:
    origin = fleet.start_origin()
    node = fleet.start_node()
    env = origin.env()
    registered = NodeKey.load_or_create(node.data / "node-key").public_key
    nodes = {n.info.node_id: n.info for n in origin.admin().nodes().nodes}
    assert nodes[node.node_id].public_key == registered

    client = OriginClient(origin.url, node.token, timeout=10)
    other = NodeKey.load_or_create(fleet.root / "other-key").public_key
    info = nodes[node.node_id]
    try:
        client.register(NodeInfo(**{**_fields(info), "public_key": other}))
    except OriginError as exc:
        assert exc.status == 409
        assert exc.message == (
            f"node {node.node_id} registered the public key {registered}; this registration has {other}."
            " A node keeps its key in `node-key` in its data directory: restore that file, or, if the node"
            f" really has a new key, an admin runs `edge secret forget-node {node.node_id}` and the node"
            " registers again"
        )
    else:
        raise AssertionError("a registration with another key was accepted")
    # Sending no key (a node from before secrets) keeps the registered one.
    client.register(NodeInfo(**{**_fields(info), "public_key": ""}))
    assert {n.info.node_id: n.info for n in origin.admin().nodes().nodes}[
        node.node_id
    ].public_key == registered

    forgot = _edge("secret", "forget-node", node.node_id, env=env)
    assert forgot.stdout.decode() == (
        f"forgot the public key {registered} of node {node.node_id}; its next registration (it retries"
        " while refused, and at every start) registers its current key\n"
    )
    client.register(NodeInfo(**{**_fields(info), "public_key": other}))
    assert {n.info.node_id: n.info for n in origin.admin().nodes().nodes}[node.node_id].public_key == other


def test_a_node_without_a_key_gets_no_secrets_and_is_named(fleet: Fleet, tmp_path: Path) -> None:
    origin = fleet.start_origin()
    env = origin.env()
    client = OriginClient(origin.url, origin.node_token(), timeout=10)
    client.register(
        NodeInfo(node_id="old-node", hostname="h", arch="x86_64", python="3.13", cpus=1, memory_bytes=1)
    )
    _set(env, "secrets", b"not for old nodes")
    assert _edge("deploy", str(_function(tmp_path, "secrets")), env=env).returncode == 0
    signed = client.sync(0, "old-node", timeout=1)
    assert isinstance(signed, SignedState) and signed.secrets is None
    listing = _edge("secret", "ls", "secrets", env=env).stdout.decode().splitlines()
    assert listing[-1] == (
        "nodes without a public key get no secrets: old-node (an edge version from before secrets:"
        " upgrade and restart them)"
    )


def test_secret_cli_refuses_bad_input_with_the_fix(fleet: Fleet, tmp_path: Path) -> None:
    origin = fleet.start_origin()
    env = origin.env()

    def refused(*args: str, stdin: bytes = b"x") -> str:
        result = _edge("secret", *args, env=env, stdin=stdin)
        assert result.returncode != 0 and result.stdout == b"", result
        return result.stderr.decode()

    assert refused("set", "secrets", "9BAD") == (
        "error: 400 bad request: secret key: Expected an environment variable name (a letter or '_',"
        " then letters, digits or '_', at most 128), got '9BAD'\n"
    )
    assert refused("set", "secrets", "API_KEY", stdin=b"") == (
        "error: 400 bad request: secret API_KEY: Expected a value of 1 to 65536 bytes, got 0 bytes\n"
    )
    assert refused("set", "secrets", "API_KEY", stdin=b"x" * 65537) == (
        "error: 413 content too large: secret API_KEY: Expected a value of 1 to 65536 bytes, got more\n"
    )
    assert refused("set", "secrets", "API_KEY", stdin=b"\xff\xfe") == (
        "error: 400 bad request: secret API_KEY: Expected UTF-8 text (it becomes an environment"
        " variable), got a byte 0xff at offset 0 that is not\n"
    )
    missing = tmp_path / "missing"
    assert refused("set", "secrets", "API_KEY", "--from-file", str(missing)) == (
        f"error: {missing}: cannot read the secret's value: No such file or directory\n"
    )
    # A value on the command line is not an option at all.
    assert "unrecognized arguments: hunter2" in refused("set", "secrets", "API_KEY", "hunter2")
    assert refused("rm", "secrets", "API_KEY") == (
        "error: 404 not found: function secrets has no secret API_KEY (its secrets: none)\n"
    )
    # --from-file keeps the bytes exactly, trailing newline included.
    value = tmp_path / "value"
    value.write_bytes(b"line\n")
    result = _edge("secret", "set", "secrets", "API_KEY", "--from-file", str(value), env=env)
    assert result.stdout == b"set secret API_KEY of secrets (5 bytes) at revision 1\n"


def _fields(info: NodeInfo) -> dict[str, object]:
    return {field: getattr(info, field) for field in info.__struct_fields__}
