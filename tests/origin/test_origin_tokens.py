"""Tokens against a real origin: ids, `edge origin token create | ls | revoke` over the API and on
the data directory, expiry, revocation from the next request on, last use, node binding, and the
dashboard session that ends with its token."""

from __future__ import annotations

import http.client
import json
import sqlite3
import threading
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path

import pytest
from origin_harness import Origin, run_edge, running_origin

from edge.control.client import OriginClient, OriginError
from edge.control.messages import NodeInfo, NodeReport
from edge.origin import tokens
from edge.origin.datadir import hash_token
from edge.origin.store import Store

REVOKED_FIX = (
    "pass an admin token with --token or EDGE_TOKEN (`edge up` keeps its admin token in"
    " .edge/up/origin/admin-token, `edge origin` in .edge/origin/admin-token); a node takes"
    " a node token with --token-file"
)


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Origin]:
    """An origin of its own: `token ls` shows only this module's tokens."""
    with running_origin(tmp_path_factory.mktemp("tokens-origin") / "data") as origin:
        yield origin


def _when(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _token_id(token: str) -> str:
    return hash_token(token)[:12]


def _create(origin: Origin, *args: str) -> tuple[str, str]:
    """`edge origin token create ARGS` over the API: (token, the stderr line)."""
    result = run_edge("origin", "token", "create", *args, env=origin.env())
    assert result.returncode == 0, result.stderr
    return result.stdout.strip(), result.stderr


def _listed(origin: Origin) -> dict[str, dict[str, object]]:
    result = run_edge("origin", "token", "ls", "--json", env=origin.env())
    assert (result.returncode, result.stderr) == (0, ""), result
    return {info["id"]: info for info in json.loads(result.stdout)}


def _status(origin: Origin, token: str) -> tuple[int, str]:
    try:
        origin.client(token).key()
    except OriginError as exc:
        return exc.status, exc.message
    return 200, ""


def test_create_prints_the_token_and_its_id_and_ls_shows_the_id_never_the_token(fresh: Origin) -> None:
    token, said = _create(fresh, "--role", "node", "--expires", "30d", "--node", "edge-1")
    info = _listed(fresh)[_token_id(token)]
    assert info["expires_at"] == pytest.approx(float(info["created_at"]) + 30 * 86400)  # type: ignore[arg-type]
    assert said == (
        f"token {_token_id(token)}: role node, bound to node edge-1, expires"
        f" {_when(info['expires_at'])} UTC; shown only this once\n"  # type: ignore[arg-type]
    )
    assert info == {
        "id": _token_id(token),
        "role": "node",
        "node_id": "edge-1",
        "nodes": [],
        "created_at": info["created_at"],
        "expires_at": info["expires_at"],
        "last_used": None,
        "revoked_at": None,
    }
    for args in (("ls",), ("ls", "--json")):
        listing = run_edge("origin", "token", *args, env=fresh.env()).stdout
        assert _token_id(token) in listing
        assert token not in listing and hash_token(token) not in listing


def test_ls_columns(fresh: Origin) -> None:
    token, _ = _create(fresh, "--role", "admin", "--expires", "12h")
    origin_client = fresh.client(token)
    origin_client.functions()
    info = _listed(fresh)[_token_id(token)]
    listing = run_edge("origin", "token", "ls", env=fresh.env()).stdout.splitlines()
    header = listing[0]
    row = next(line for line in listing if line.startswith(_token_id(token)))
    columns = ["ID", "ROLE", "NODE", "CREATED (UTC)", "EXPIRES (UTC)", "LAST USED (UTC)", "REVOKED (UTC)"]
    starts = [header.index(column) for column in columns]
    cells = [row[start:end].strip() for start, end in zip(starts, [*starts[1:], None], strict=True)]
    assert cells == [
        _token_id(token),
        "admin",
        "-",
        _when(info["created_at"]),  # type: ignore[arg-type]
        _when(info["expires_at"]),  # type: ignore[arg-type]
        _when(info["last_used"]),  # type: ignore[arg-type]
        "-",
    ]


def test_revoke_takes_effect_on_the_next_request(fresh: Origin) -> None:
    token, _ = _create(fresh, "--role", "node")
    client = fresh.client(token)
    assert len(client.key()) == 44
    token_id = _token_id(token)
    result = run_edge("origin", "token", "revoke", token_id, env=fresh.env())
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == f"revoked token {token_id} (node); the origin refuses it from its next request\n"
    revoked_at = _listed(fresh)[token_id]["revoked_at"]
    assert isinstance(revoked_at, float)
    assert _status(fresh, token) == (
        401,
        f"bearer token {token_id} was revoked at {_when(revoked_at)} UTC; create a new one with"
        " `edge origin token create --role node`",
    )
    with pytest.raises(OriginError) as caught:
        client.key()
    assert str(caught.value) == f"401 unauthorized: {caught.value.message}; {REVOKED_FIX}"
    again = run_edge("origin", "token", "revoke", token_id, env=fresh.env())
    assert (again.returncode, again.stdout) == (1, "")
    assert again.stderr == (
        f"error: 409 conflict: token {token_id} was already revoked at {_when(revoked_at)} UTC\n"
    )


def test_a_long_poll_waiting_when_its_token_is_revoked_answers_401(fresh: Origin) -> None:
    token, _ = _create(fresh, "--role", "node")
    client = fresh.client(token)
    outcome: list[object] = []

    def poll() -> None:
        try:
            outcome.append(client.request("GET", "/v1/sync?revision=1000000000&timeout=3"))
        except OriginError as exc:
            outcome.append(exc)

    thread = threading.Thread(target=poll)
    thread.start()
    deadline = time.monotonic() + 5  # the poll passed the bearer check once its use is recorded
    while _listed(fresh)[_token_id(token)]["last_used"] is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert run_edge("origin", "token", "revoke", _token_id(token), env=fresh.env()).returncode == 0
    thread.join(10)
    [answer] = outcome
    assert isinstance(answer, OriginError) and answer.status == 401, answer
    assert answer.message.startswith(f"bearer token {_token_id(token)} was revoked at ")


def test_revoke_refuses_bad_and_unknown_ids(fresh: Origin) -> None:
    result = run_edge("origin", "token", "revoke", "edge_node_abc", env=fresh.env())
    assert result.stderr == (
        "error: 400 bad request: token id: Expected 12 lowercase hex digits as `edge origin token ls`"
        " shows, got 'edge_node_abc'\n"
    )
    result = run_edge("origin", "token", "revoke", "0123456789ab", env=fresh.env())
    assert result.stderr == (
        "error: 404 not found: no token with id 0123456789ab; `edge origin token ls` lists them\n"
    )


def test_the_last_valid_admin_token_cannot_be_revoked(tmp_path: Path) -> None:
    with running_origin(tmp_path / "data") as origin:
        admin_id = _token_id(origin.admin_token)
        result = run_edge("origin", "token", "revoke", admin_id, env=origin.env())
        assert (result.returncode, result.stderr) == (
            1,
            f"error: 409 conflict: token {admin_id} is the last valid admin token; create another first"
            " (`edge origin token create --role admin`)\n",
        )
        other, _ = _create(origin, "--role", "admin")
        assert run_edge("origin", "token", "revoke", admin_id, env=origin.env()).returncode == 0
        assert _status(origin, origin.admin_token)[0] == 401
        assert origin.client(other).functions() == []


def test_the_data_directory_works_too_and_a_running_origin_sees_it(fresh: Origin) -> None:
    data = ("--data", str(fresh.data))
    result = run_edge("origin", "token", "create", "--role", "node", *data)
    token = result.stdout.strip()
    assert (
        result.stderr
        == f"token {_token_id(token)}: role node, any node id, no expiry; shown only this once\n"
    )
    assert _status(fresh, token) == (200, "")
    listing = run_edge("origin", "token", "ls", "--json", *data)
    assert _token_id(token) in {info["id"] for info in json.loads(listing.stdout)}
    revoked = run_edge("origin", "token", "revoke", _token_id(token), *data)
    assert (revoked.returncode, revoked.stderr) == (0, "")
    assert _status(fresh, token)[0] == 401


def test_an_expired_token_is_refused(fresh: Origin) -> None:
    hour_ago = time.time() - 3600
    with closing(Store(fresh.data / "origin.db")) as store:
        created = tokens.create(store, "admin", hour_ago, expires_in_s=60)
    assert _status(fresh, created.token) == (
        401,
        f"bearer token {created.info.id} expired at {_when(hour_ago + 60)} UTC; create a new one with"
        " `edge origin token create --role admin`",
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ("--expires", "30"),
            "argument --expires: Expected a whole number of minutes, hours or days such as 90m, 12h or 30d,"
            " got '30'",
        ),
        (
            ("--expires", "1w"),
            "argument --expires: Expected a whole number of minutes, hours or days such as 90m, 12h or 30d,"
            " got '1w'",
        ),
    ],
)
def test_bad_expiry_is_refused(fresh: Origin, args: tuple[str, ...], message: str) -> None:
    result = run_edge("origin", "token", "create", "--role", "node", *args, env=fresh.env())
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == f"edge origin token create: error: {message}"


def test_a_lifetime_over_ten_years_is_refused(fresh: Origin) -> None:
    result = run_edge("origin", "token", "create", "--role", "node", "--expires", "3651d", env=fresh.env())
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == (
        "error: 400 bad request: request body: Expected `$.expires_in_s` from 0 to 315360000 seconds"
        " (10 years), got 315446400.0\n"
    )


def test_node_binding_needs_a_node_token(fresh: Origin) -> None:
    result = run_edge("origin", "token", "create", "--role", "admin", "--node", "edge-1", env=fresh.env())
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == (
        "error: --node edge-1: only a node token is bound to a node; drop --node or use --role node\n"
    )
    with pytest.raises(OriginError) as caught:
        fresh.admin().create_token("node", node_id="bad/id")
    assert (caught.value.status, caught.value.message) == (
        400,
        "request body: Expected `$.node_id` of 1-128 letters, digits, '.', '_' or '-' (not first),"
        " got 'bad/id'",
    )


def test_last_use_is_written_at_most_once_a_minute(fresh: Origin) -> None:
    token, _ = _create(fresh, "--role", "node")
    token_hash = hash_token(token)

    def last_used() -> float | None:
        with closing(sqlite3.connect(fresh.data / "origin.db")) as db:
            row = db.execute("SELECT last_used FROM tokens WHERE hash = ?", (token_hash,)).fetchone()
        return None if row[0] is None else float(row[0])

    assert last_used() is None
    before = time.time()
    fresh.client(token).key()
    first = last_used()
    assert first is not None and before - 1 <= first <= time.time() + 1
    for _ in range(3):
        fresh.client(token).key()
    assert last_used() == first


# Node binding, at the origin (tests/fleet/test_fleet_tokens.py runs real nodes).


def _info(node_id: str) -> NodeInfo:
    return NodeInfo(node_id=node_id, hostname="test", arch="x86_64", python="3.13", cpus=1, memory_bytes=1)


def _report(node_id: str) -> NodeReport:
    return NodeReport(node_id=node_id, applied_revision=0, applied_purge_id=0)


def _refused(call: object) -> tuple[int, str]:
    assert callable(call)
    with pytest.raises(OriginError) as caught:
        call()
    return caught.value.status, caught.value.message


def _sync(client: OriginClient, node_id: str) -> None:
    query = urllib.parse.urlencode({"revision": 10**9, "node_id": node_id, "timeout": 0})
    client.request("GET", f"/v1/sync?{query}")


def test_a_node_id_belongs_to_the_token_that_registered_it(fresh: Origin) -> None:
    first = fresh.client(_create(fresh, "--role", "node")[0])
    second_token = _create(fresh, "--role", "node")[0]
    second = fresh.client(second_token)
    first.register(_info("shared-id"))
    first.report(_report("shared-id"))
    first_id = _token_id(first.token or "")
    message = (
        f"node `shared-id` belongs to token {first_id}, the token that registered it; this is token"
        f" {_token_id(second_token)}: start that node with its own token, or revoke {first_id}"
        f" (`edge origin token revoke {first_id}`) so another token can take the id"
    )
    assert _refused(lambda: second.register(_info("shared-id"))) == (403, message)
    assert _refused(lambda: second.report(_report("shared-id"))) == (403, message)
    assert _refused(lambda: _sync(second, "shared-id")) == (403, message)
    batch = json.dumps({"lines": [], "dropped": 0}).encode()
    assert _refused(lambda: second.request("POST", "/v1/nodes/shared-id/logs", batch)) == (403, message)
    # The refusal tells the node what to do, not to use an admin token.
    with pytest.raises(OriginError) as caught:
        second.register(_info("shared-id"))
    assert str(caught.value) == f"403 forbidden: {message}"
    # `ls` shows which nodes belong to which token.
    assert _listed(fresh)[first_id]["nodes"] == ["shared-id"]
    # Once the first token is revoked, another may take the id.
    assert run_edge("origin", "token", "revoke", first_id, env=fresh.env()).returncode == 0
    second.register(_info("shared-id"))
    second.report(_report("shared-id"))
    assert _listed(fresh)[_token_id(second_token)]["nodes"] == ["shared-id"]


def test_a_bound_token_acts_only_as_its_node_and_its_workers(fresh: Origin) -> None:
    token, _ = _create(fresh, "--role", "node", "--node", "edge-7")
    client = fresh.client(token)
    client.register(_info("edge-7"))
    client.register(_info("edge-7-4242"))  # a worker of a node with workers > 1
    for other in ("edge-8", "edge-7-x", "edge-70"):
        assert _refused(lambda other=other: client.register(_info(other))) == (
            403,
            f"node token {_token_id(token)} is bound to node `edge-7`; it cannot act as node `{other}`:"
            f" give that node its own token (`edge origin token create --role node --node {other}`)",
        )
    assert _refused(lambda: client.report(_report("edge-8")))[0] == 403


def test_admin_tokens_may_still_read_what_nodes_read(fresh: Origin) -> None:
    admin = fresh.admin()
    node = fresh.client(_create(fresh, "--role", "node")[0])
    node.register(_info("admin-reads"))
    _sync(admin, "admin-reads")  # an admin token polls as any node id without taking it
    node.report(_report("admin-reads"))


# The dashboard.


def _login(origin: Origin, token: str) -> tuple[int, str]:
    """POST /login; (status, the session cookie or "")."""
    connection = http.client.HTTPConnection("127.0.0.1", origin.port, timeout=10)
    try:
        body = urllib.parse.urlencode({"token": token})
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        connection.request("POST", "/login", body, headers)
        response = connection.getresponse()
        response.read()
        cookie = (response.getheader("set-cookie") or "").split(";")[0]
        return response.status, cookie
    finally:
        connection.close()


def _state(origin: Origin, cookie: str) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", origin.port, timeout=10)
    try:
        connection.request("GET", "/ui/state", headers={"Cookie": cookie})
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def test_a_dashboard_session_ends_when_its_token_is_revoked(fresh: Origin) -> None:
    token, _ = _create(fresh, "--role", "admin")
    status, cookie = _login(fresh, token)
    assert status == 303 and cookie.startswith("edge_session=")
    assert _state(fresh, cookie) == 200
    assert run_edge("origin", "token", "revoke", _token_id(token), env=fresh.env()).returncode == 0
    assert _state(fresh, cookie) == 401
    assert _login(fresh, token) == (401, "")


def test_a_dashboard_session_ends_when_its_token_expires(fresh: Origin) -> None:
    token, _ = _create(fresh, "--role", "admin", "--expires", "90m")
    status, cookie = _login(fresh, token)
    assert status == 303
    assert _state(fresh, cookie) == 200
    # Its expiry brought forward to a second ago, as if 90 minutes had passed.
    with closing(sqlite3.connect(fresh.data / "origin.db")) as db, db:
        db.execute("UPDATE tokens SET expires_at = ? WHERE hash = ?", (time.time() - 1, hash_token(token)))
    assert _state(fresh, cookie) == 401
    assert _login(fresh, token) == (401, "")


def test_a_database_from_before_token_ids_is_upgraded_on_open(tmp_path: Path) -> None:
    path = tmp_path / "origin.db"
    with closing(sqlite3.connect(path)) as db, db:
        db.execute(
            "CREATE TABLE tokens (hash TEXT PRIMARY KEY, role TEXT NOT NULL, created_at REAL NOT NULL)"
        )
        db.execute(
            "CREATE TABLE nodes (node_id TEXT PRIMARY KEY, info TEXT NOT NULL, registered_at REAL NOT NULL,"
            " last_seen REAL NOT NULL, report TEXT)"
        )
        db.execute("INSERT INTO tokens VALUES (?, 'node', 1.0)", (hash_token("old"),))
    with closing(Store(path)) as store:
        assert [(t.id, t.role, t.expires_at, t.revoked_at) for t in store.tokens()] == [
            (_token_id("old"), "node", None, None)
        ]
        assert store.node_token("any") is None
        assert tokens.revoke(store, _token_id("old"), 2.0).revoked_at == 2.0
