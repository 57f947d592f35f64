"""No function reads the fleet's secret files where deploy/ puts them, in either isolation mode.

A real origin keeps its admin token and signing key in its data directory (/var/lib/edge/origin
in deploy/edge-origin.service); a real node gets its token and TLS key as systemd credentials
(/run/credentials/edge-node.service/). Here the same tree sits under a temporary
root R, with the node's protected paths (`protected_paths`, default /var/lib/edge and /etc/edge)
moved under R too; two functions, one per isolation mode, are granted read access to all of R and
still cannot open any of those files, while an ordinary file beside them reads fine.
"""

from __future__ import annotations

import json
import re
import ssl
import urllib.parse
from pathlib import Path

import pytest
from fleet_harness import REPO, Fleet, Node, Origin, run_edge, wait_for

from edge.control.tls import self_signed
from edge.node.settings import DEFAULT_PROTECTED

SPY = """\
import json
from urllib.parse import unquote

def handler(request):
    results = {}
    for path in json.loads(unquote(request.query_string)):
        try:
            with open(path, "rb") as file:
                results[path] = ["read", len(file.read())]
        except OSError as exc:
            results[path] = ["refused", type(exc).__name__]
    return results
"""


def spy(root: Path, name: str, isolation: str, readable: Path) -> Path:
    """A function that tries to read the paths in its query string, granted read access to `readable`."""
    directory = root / name
    directory.mkdir(parents=True)
    (directory / "edge.toml").write_text(
        f'name = "{name}"\nisolation = "{isolation}"\n[permissions]\nread = ["{readable}"]\n'
    )
    (directory / "main.py").write_text(SPY)
    return directory


@pytest.mark.parametrize("isolation", ["interpreter", "process"])
def test_functions_cannot_read_the_secret_files(fleet: Fleet, tmp_path: Path, isolation: str) -> None:
    root = tmp_path / "R"
    origin = Origin(root / "var/lib/edge/origin", tmp_path / "origin.log")
    fleet.origin = origin
    origin.start()
    data = origin.data
    origin_secrets = [data / "admin-token", data / "signing-key.pem"]
    credentials = root / "run/credentials/edge-node.service"
    credentials.mkdir(parents=True)
    node_token = credentials / "node-token"
    node = Node(origin, origin.node_token(), root / "var/lib/edge/node", tmp_path / "node.log", None)
    given = node.argv.index("--token-file") + 1
    node_token.write_text(Path(node.argv[given]).read_text())
    node_token.chmod(0o400)  # as systemd's LoadCredential= leaves it
    node.argv[given] = str(node_token)
    tls_cert, tls_key = credentials / "tls-cert", credentials / "tls-key"
    self_signed(tls_cert, tls_key, ["127.0.0.1"])
    tls_key.chmod(0o400)
    node.argv += ["--tls-cert", str(tls_cert), "--tls-key", str(tls_key)]
    node.ready_url = node.ready_url.replace("http://", "https://")
    node.context = ssl.create_default_context(cafile=str(tls_cert))
    protected = [str(root / path.lstrip("/")) for path in DEFAULT_PROTECTED if path.startswith("/")]
    node.environ["EDGE_PROTECTED_PATHS"] = ",".join(protected)
    fleet.nodes.append(node)
    node.start()
    public = root / "srv/public.txt"
    public.parent.mkdir(parents=True)
    public.write_text("fine")
    public.chmod(0o644)
    directory = spy(tmp_path / "src", "spy", isolation, root)
    result = run_edge("deploy", str(directory), "--wait", env=origin.env())
    assert result.returncode == 0, result.stderr

    paths = [str(path) for path in (*origin_secrets, node_token, tls_key, public)]
    query = urllib.parse.quote(json.dumps(paths))
    reply = wait_for(lambda: (r := node.get(f"/spy?{query}")).status == 200 and r, 20, "/spy served")
    results = reply.json()
    assert results.pop(str(public)) == ["read", 4]
    assert {path: verdict[0] for path, verdict in results.items()} == dict.fromkeys(paths[:-1], "refused")


def test_the_units_keep_secrets_where_the_node_protects_them() -> None:
    """What the test above moves under R is where deploy/ really puts it."""
    protected = [Path(path) for path in DEFAULT_PROTECTED if path.startswith("/")]
    for unit in ("edge-origin.service", "edge-node.service"):
        (start,) = re.findall(r"^ExecStart=(.*)$", (REPO / "deploy" / unit).read_text(), re.M)
        (data,) = re.findall(r"--data (\S+)", start)
        assert any(Path(data).is_relative_to(path) for path in protected), (unit, data)
    # The token comes from the credentials directory, which `edge node` protects as the token file.
    node = (REPO / "deploy/edge-node.service").read_text()
    assert "LoadCredential=node-token:/etc/edge/node-token" in node
    assert "--token-file %d/node-token" in node
