"""TLS between real processes: an origin with a self-signed certificate it made on first start,
a node that pins it (--origin-ca) and serves functions over HTTPS itself, and the CLI.

The long-poll keeps its TLS connection alive between polls; a node or CLI that cannot verify the
origin is refused with a message that names --origin-ca; wrong files fail before anything serves.
"""

from __future__ import annotations

import http.client
import ssl
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from fleet_harness import Fleet, Node, Origin, request, run_edge, wait_for, write_version

from edge.control.client import OriginClient, OriginUntrusted
from edge.control.tls import CERT_FILE, KEY_FILE, fingerprint, load_certificate, self_signed
from edge.node.nodeinfo import node_info


def start_tls_origin(fleet: Fleet) -> Origin:
    """`edge origin --tls-self-signed`, trusted by the harness through its own certificate."""
    origin = Origin(fleet.root / "origin", fleet.root / "origin.log")
    origin.argv.append("--tls-self-signed")
    origin.url = origin.url.replace("http://", "https://")
    origin.ready_url = origin.ready_url.replace("http://", "https://")
    # Before the first start the file does not exist yet: trust whatever is there once it answers.
    origin.context = ssl.create_default_context()
    origin.context.check_hostname = False
    origin.context.verify_mode = ssl.CERT_NONE
    fleet.origin = origin
    origin.start()
    origin.ca_file = str(origin.data / CERT_FILE)
    origin.context = ssl.create_default_context(cafile=origin.ca_file)
    return origin


def tls_node(
    fleet: Fleet, origin: Origin, tmp_path: Path, *, pinned: bool = True, name: str = "node"
) -> Node:
    """A node syncing from the https origin (pinning its certificate unless `pinned` is False) and
    serving HTTPS with a certificate of its own."""
    cert, key = tmp_path / f"{name}-cert.pem", tmp_path / f"{name}-key.pem"
    self_signed(cert, key, ["localhost", "127.0.0.1"])
    node = Node(origin, origin.node_token(), tmp_path / name, tmp_path / f"{name}.log", None)
    node.argv += ["--tls-cert", str(cert), "--tls-key", str(key)]
    if pinned:
        node.argv += ["--origin-ca", str(origin.ca_file)]
    node.ready_url = node.ready_url.replace("http://", "https://")
    node.context = ssl.create_default_context(cafile=str(cert))
    fleet.nodes.append(node)
    return node


@pytest.fixture
def origin(fleet: Fleet) -> Iterator[Origin]:
    yield start_tls_origin(fleet)


def test_deploy_sync_and_serve_over_tls(fleet: Fleet, origin: Origin, tmp_path: Path) -> None:
    output = origin.output()
    cert_path = origin.data / CERT_FILE
    certificate = load_certificate(cert_path, "cert")
    assert f"TLS certificate {cert_path}\n  sha256 fingerprint {fingerprint(certificate)}\n" in output
    assert f"origin on https://127.0.0.1:{origin.port}" in output
    assert stat.S_IMODE((origin.data / KEY_FILE).stat().st_mode) == 0o600

    node = tls_node(fleet, origin, tmp_path)
    node.start()
    wait_for(lambda: node.node_id in origin.live_nodes(), 20, "the node to register over TLS")
    directory, _ = write_version(tmp_path / "src", "over tls")
    result = run_edge("deploy", str(directory), "--wait", env=origin.env())
    assert result.returncode == 0, result.stderr
    assert node.body("/hello") == b"over tls"  # HTTPS to the node, verified against its certificate
    assert node.ready()["connected"] is True

    # A plain-HTTP client gets no answer from the node's HTTPS port.
    with pytest.raises((OSError, http.client.HTTPException)):
        request(node.port, "/hello")


def test_a_cli_without_the_certificate_is_refused_with_the_fix(origin: Origin) -> None:
    env = {"EDGE_ORIGIN": origin.url, "EDGE_TOKEN": origin.admin_token}
    result = run_edge("ls", env=env)
    assert result.returncode == 1
    assert result.stderr == (
        f"error: cannot verify the TLS certificate of the origin at {origin.url}: self-signed certificate;"
        " pass the origin's certificate with --origin-ca FILE (or EDGE_ORIGIN_CA; `edge origin"
        " --tls-self-signed` printed its path and sha256 fingerprint), or the CA that signed it\n"
    )
    # Pinned to another certificate: refused too, naming the pinned file.
    other = origin.data.parent / "other.pem"
    self_signed(other, origin.data.parent / "other-key.pem", ["127.0.0.1"])
    result = run_edge("ls", "--origin-ca", str(other), env=env)
    assert result.returncode == 1
    assert f"against --origin-ca {other}: self-signed certificate;" in result.stderr
    # The same origin at http:// is told apart from an origin that is down.
    plain = origin.url.replace("https://", "http://")
    result = run_edge("ls", "--origin", plain, env=env)
    assert result.stderr == (
        f"error: cannot reach the origin at {plain}: it answers in TLS, not plain HTTP; use an https://"
        " URL (with --origin-ca FILE for its certificate)\n"
    )
    result = run_edge("ls", "--origin", plain, "--origin-ca", str(origin.ca_file), env=env)
    assert result.stderr == (
        f"error: origin URL: Expected an https:// URL with --origin-ca {origin.ca_file}, got {plain!r};"
        " use https:// (the origin serves TLS), or drop --origin-ca (EDGE_ORIGIN_CA)\n"
    )
    assert run_edge("ls", "--origin-ca", str(origin.ca_file), env=env).returncode == 0
    # The token commands over the admin API too.
    listed = run_edge("origin", "token", "ls", env={**env, "EDGE_ORIGIN_CA": str(origin.ca_file)})
    assert (listed.returncode, listed.stderr) == (0, ""), listed
    assert "admin" in listed.stdout
    refused = run_edge("origin", "token", "ls", env=env)
    assert refused.returncode == 1
    assert "self-signed certificate; pass the origin's certificate with --origin-ca FILE" in refused.stderr


def test_a_node_that_cannot_verify_the_origin_says_which_option_fixes_it(
    fleet: Fleet, origin: Origin, tmp_path: Path
) -> None:
    node = tls_node(fleet, origin, tmp_path, pinned=False)
    node.start()
    errors = wait_for(lambda: node.ready()["errors"], 10, "the node's sync error")
    assert errors == [
        f"sync: cannot verify the TLS certificate of the origin at {origin.url}: self-signed certificate;"
        " pass the origin's certificate with --origin-ca FILE (or EDGE_ORIGIN_CA; `edge origin"
        " --tls-self-signed` printed its path and sha256 fingerprint), or the CA that signed it"
    ]
    assert node.ready()["connected"] is False


def test_the_long_poll_keeps_its_tls_connection(origin: Origin) -> None:
    client = OriginClient(
        origin.url, origin.node_token(), timeout=5.0, ca_file=origin.ca_file, keep_alive=True
    )
    try:
        client.register(node_info("keepalive"))
        revision = client.health().revision
        ports = []
        for _ in range(3):
            assert client.sync(revision, "keepalive", timeout=0.5) is None  # 204 after half a second
            (connection,) = client._idle
            assert connection.sock is not None
            ports.append(connection.sock.getsockname()[1])
        assert len(set(ports)) == 1, ports  # one TLS connection for every poll
    finally:
        client.close()
    with pytest.raises(OriginUntrusted):
        OriginClient(origin.url, None, timeout=5.0).health()


def test_bad_tls_files_fail_before_anything_serves(origin: Origin, tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    self_signed(cert, key, ["127.0.0.1"])
    other_cert, other_key = tmp_path / "other.pem", tmp_path / "other-key.pem"
    self_signed(other_cert, other_key, ["127.0.0.1"])
    base = ["node", "--functions", str(tmp_path), "--port", "0", "--admin-port", "0"]
    cases = [
        (
            ["--tls-cert", str(cert)],
            "error: --tls-cert needs --tls-key too: give both the certificate and its private key\n",
        ),
        (
            ["--tls-cert", str(tmp_path / "missing.pem"), "--tls-key", str(key)],
            f"error: --tls-cert {tmp_path / 'missing.pem'}: cannot read the certificate:"
            " No such file or directory\n",
        ),
        (
            ["--tls-cert", str(key), "--tls-key", str(key)],
            f"error: --tls-cert {key}: Expected a PEM certificate (-----BEGIN CERTIFICATE-----), got"
            " '-----BEGIN PRIVATE KEY-----'\n",
        ),
        (
            ["--tls-cert", str(cert), "--tls-key", str(other_key)],
            f"error: --tls-key {other_key}: this key does not belong to the certificate --tls-cert {cert}"
            " (their public keys differ); give the key the certificate was made for\n",
        ),
        (
            ["--origin-ca", str(cert)],
            f"error: --origin-ca {cert}: only an origin-mode node (--origin URL) uses it\n",
        ),
    ]
    for flags, expected in cases:
        result = run_edge(*base, *flags)
        assert (result.returncode, result.stderr) == (2, expected), flags
    token = tmp_path / "token"
    token.write_text("edge_node_x\n")
    plain = origin.url.replace("https://", "http://")
    result = run_edge(
        "node", "--origin", plain, "--token-file", str(token), "--origin-ca", str(cert), "--port", "0"
    )
    assert (result.returncode, result.stderr) == (
        2,
        f"error: origin URL: Expected an https:// URL with --origin-ca {cert}, got {plain!r}; use https://"
        " (the origin serves TLS), or drop --origin-ca (EDGE_ORIGIN_CA) - at `$.origin`\n",
    )
    # The origin: half a pair, and a self-signed pair that lost its key.
    result = run_edge("origin", "--data", str(tmp_path / "o"), "--port", "0", "--tls-key", str(key))
    assert (result.returncode, result.stderr) == (
        2,
        "error: --tls-key needs --tls-cert too: give both the certificate and its private key\n",
    )
    data = tmp_path / "o2"
    data.mkdir()
    (data / CERT_FILE).write_bytes(cert.read_bytes())
    result = run_edge("origin", "--data", str(data), "--port", "0", "--tls-self-signed")
    assert (result.returncode, result.stderr) == (
        2,
        f"error: {data / KEY_FILE}: missing while {data / CERT_FILE} exists; remove {data / CERT_FILE} too"
        " and start again to make a new pair (every node and CLI then needs the new certificate)\n",
    )


def test_an_https_url_for_a_plain_origin_says_so(fleet: Fleet) -> None:
    origin = fleet.start_origin()
    url = origin.url.replace("http://", "https://")
    result = run_edge("ls", "--origin", url, env={"EDGE_TOKEN": origin.admin_token})
    assert (result.returncode, result.stderr) == (
        1,
        f"error: cannot reach the origin at {url}: it does not answer in TLS (WRONG_VERSION_NUMBER); start"
        " it with --tls-cert/--tls-key (or --tls-self-signed), or use an http:// URL\n",
    )


def test_origin_tls_options_that_cannot_work_are_refused_before_anything_is_written(tmp_path: Path) -> None:
    data = tmp_path / "data"
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    self_signed(cert, key, ["127.0.0.1"])
    base = ["origin", "--data", str(data), "--port", "0"]
    result = run_edge(*base, "--tls-self-signed", "--tls-cert", str(cert), "--tls-key", str(key))
    assert (result.returncode, result.stderr) == (
        2,
        "error: --tls-self-signed makes its own certificate: give it, or --tls-cert/--tls-key, not both\n",
    )
    result = run_edge(*base, "--tls-san", "origin.example")
    assert (result.returncode, result.stderr) == (
        2,
        "error: --tls-san names the hosts of the self-signed certificate: it needs --tls-self-signed\n",
    )
    result = run_edge(*base, "--tls-self-signed", "--tls-san", "https://origin.example")
    assert result.returncode == 2
    assert result.stderr.endswith(
        "edge origin: error: argument --tls-san: Expected a host name or an IP address (e.g. origin.example"
        " or 10.0.0.5), got 'https://origin.example'\n"
    )
    assert not data.exists()
    # A self-signed pair from an earlier start that lacks a name asked for now.
    data.mkdir()
    self_signed(data / CERT_FILE, data / KEY_FILE, ["127.0.0.1"])
    result = run_edge(*base, "--tls-self-signed", "--tls-san", "Origin.Example")
    assert (result.returncode, result.stderr) == (
        2,
        f"error: {data / CERT_FILE}: the self-signed certificate is not for origin.example; remove"
        f" {data / CERT_FILE} and {data / KEY_FILE} and start again to make one that is (every node and"
        " CLI then needs the new certificate)\n",
    )
