"""The dashboard over HTTP against a real origin: login, the session cookie, CSRF, logout, the state
JSON (with traffic aggregated from reports posted as nodes would), escaping; sessions in-process."""

from __future__ import annotations

import http.client
import json
import re
import secrets
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from origin_harness import Origin, running_origin, write_function

from edge import bundle
from edge.control.messages import FunctionStats, FunctionStatus, NodeInfo, NodeReport
from edge.origin.app import build_origin
from edge.origin.dashboard import combine, dashboard_state
from edge.origin.sessions import Sessions
from edge.origin.settings import OriginSettings
from isolates.manifest import Manifest


@dataclass
class Answer:
    status: int
    headers: dict[str, list[str]]
    body: bytes

    def header(self, name: str) -> str:
        values = self.headers.get(name, [])
        assert len(values) == 1, (name, self.headers)
        return values[0]

    def json(self) -> object:
        assert self.header("content-type") == "application/json", self.headers
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode()


@dataclass
class Browser:
    """Just enough of a browser: one cookie jar, requests to the origin over HTTP."""

    origin: Origin
    cookies: dict[str, str] = field(default_factory=dict)

    def send(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> Answer:
        all_headers = dict(headers or {})
        if self.cookies:
            all_headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        connection = http.client.HTTPConnection("127.0.0.1", self.origin.port, timeout=10)
        try:
            connection.request(method, path, body, all_headers)
            response = connection.getresponse()
            collected: dict[str, list[str]] = {}
            for key, value in response.getheaders():
                collected.setdefault(key.lower(), []).append(value)
            answer = Answer(response.status, collected, response.read())
        finally:
            connection.close()
        for cookie in answer.headers.get("set-cookie", []):
            name, _, rest = cookie.partition("=")
            value = rest.split(";")[0]
            if "Max-Age=0" in cookie:
                self.cookies.pop(name, None)
            else:
                self.cookies[name] = value
        return answer

    def form(self, path: str, fields: dict[str, str], headers: dict[str, str] | None = None) -> Answer:
        body = urllib.parse.urlencode(fields).encode()
        return self.send(
            "POST", path, body, {"Content-Type": "application/x-www-form-urlencoded", **(headers or {})}
        )

    def login(self) -> str:
        """Log in with the admin token; returns the page's CSRF token."""
        answer = self.form("/login", {"token": self.origin.admin_token})
        assert answer.status == 303, answer
        page = self.send("GET", "/")
        found = re.search(r'<meta name="csrf-token" content="([^"]+)">', page.text)
        assert found is not None, page.text
        return found[1]

    def post_json(self, path: str, value: object, csrf: str | None, origin: str | None = None) -> Answer:
        headers = {"Content-Type": "application/json"}
        if csrf is not None:
            headers["X-CSRF-Token"] = csrf
        if origin is not None:
            headers["Origin"] = origin
        return self.send("POST", path, json.dumps(value).encode(), headers)


def _deploy(origin: Origin, root: Path, name: str, body: str) -> str:
    directory = write_function(root / body, f"async def handler(request):\n    return {body!r}\n")
    (directory / "edge.toml").write_text(f'name = "{name}"\n')
    return origin.admin().deploy(name, bundle.pack(directory)).version


def _name() -> str:
    return f"dash-{secrets.token_hex(4)}"


def test_without_a_session_there_is_the_login_form_and_no_data(origin: Origin) -> None:
    browser = Browser(origin)

    page = browser.send("GET", "/")

    assert page.status == 200
    assert page.header("content-type") == "text/html; charset=utf-8"
    assert '<form method="post" action="/login" id="login">' in page.text
    assert "csrf-token" not in page.text
    assert page.header("content-security-policy").startswith("default-src 'none'; script-src 'self';")
    assert page.header("x-frame-options") == "DENY"
    state = browser.send("GET", "/ui/state")
    assert (state.status, state.json()) == (
        401,
        {"error": "no dashboard session: log in at / with an admin token"},
    )
    refused = browser.post_json("/ui/functions/hello/rollback", {}, csrf="anything")
    assert refused.status == 401
    browser.cookies["edge_session"] = "made-up"
    assert browser.send("GET", "/ui/state").status == 401
    assert "csrf-token" not in browser.send("GET", "/").text


def test_login_sets_a_strict_httponly_session_cookie_that_is_not_the_token(origin: Origin) -> None:
    browser = Browser(origin)

    answer = browser.form("/login", {"token": origin.admin_token})

    assert (answer.status, answer.header("location")) == (303, "/")
    cookie = answer.header("set-cookie")
    value = browser.cookies["edge_session"]
    assert cookie == f"edge_session={value}; Max-Age=28800; Path=/; HttpOnly; SameSite=Strict"
    assert len(value) >= 40 and origin.admin_token not in cookie
    page = browser.send("GET", "/")
    assert page.status == 200 and '<script src="/ui/static/dashboard.js" defer></script>' in page.text
    assert browser.send("GET", "/ui/state").status == 200
    # Two logins are two sessions.
    other = Browser(origin)
    other.login()
    assert other.cookies["edge_session"] != value


def test_cookie_is_secure_when_the_request_came_over_https(origin: Origin) -> None:
    browser = Browser(origin)

    answer = browser.form("/login", {"token": origin.admin_token}, {"X-Forwarded-Proto": "https"})

    assert answer.header("set-cookie").endswith("; Path=/; HttpOnly; SameSite=Strict; Secure")


@pytest.mark.parametrize(
    ("token", "message"),
    [
        ("", "Enter the origin&#x27;s admin token."),
        (
            "edge_admin_wrong",
            "Unknown token. Use an admin token: the first one is in the origin&#x27;s data directory"
            " (admin-token); `edge origin token create --role admin` makes another.",
        ),
        ("NODE", "This is a node token; log in with an admin token."),
    ],
)
def test_a_wrong_token_gets_the_form_again_with_401(origin: Origin, token: str, message: str) -> None:
    browser = Browser(origin)
    if token == "NODE":
        token = origin.token("node")

    answer = browser.form("/login", {"token": token})

    assert answer.status == 401
    assert f'<p class="error" role="alert">{message}</p>' in answer.text
    assert '<form method="post" action="/login" id="login">' in answer.text
    assert "set-cookie" not in answer.headers and browser.cookies == {}


def test_login_refuses_another_sites_origin_and_a_json_body(origin: Origin) -> None:
    browser = Browser(origin)

    cross = browser.form("/login", {"token": origin.admin_token}, {"Origin": "http://evil.example"})
    wrong_type = browser.send("POST", "/login", json.dumps({"token": origin.admin_token}).encode())

    assert (cross.status, cross.json()) == (
        403,
        {
            "error": "Origin header: Expected this dashboard's own origin (host "
            f"'127.0.0.1:{origin.port}'), got 'http://evil.example'"
        },
    )
    assert (wrong_type.status, wrong_type.json()) == (
        415,
        {"error": "Content-Type: Expected application/x-www-form-urlencoded, got ''"},
    )
    assert browser.cookies == {}


def test_posts_need_the_sessions_csrf_token_and_a_same_site_origin(origin: Origin, tmp_path: Path) -> None:
    name = _name()
    first = _deploy(origin, tmp_path, name, "one")
    second = _deploy(origin, tmp_path, name, "two")
    browser = Browser(origin)
    csrf = browser.login()
    path = f"/ui/functions/{name}/rollback"
    missing = (
        "CSRF token: Expected the session's token in the X-CSRF-Token header or the `csrf` form field,"
        " got none; reload the dashboard and try again"
    )

    assert (browser.post_json(path, {}, None).json(), browser.post_json(path, {}, None).status) == (
        {"error": missing},
        403,
    )
    wrong = browser.post_json(path, {}, "x" * 43)
    assert (wrong.status, wrong.json()) == (403, {"error": missing.replace("got none", "got a wrong one")})
    # Another session's token does not fit this session.
    other_csrf = Browser(origin).login()
    assert browser.post_json(path, {}, other_csrf).status == 403
    cross = browser.post_json(path, {}, csrf, origin="http://evil.example")
    assert cross.status == 403
    assert origin.admin().function(name).releases[0].version == second

    done = browser.post_json(path, {}, csrf, origin=f"http://127.0.0.1:{origin.port}")

    assert done.status == 200, done
    result = done.json()
    assert isinstance(result, dict)
    assert (result["name"], result["version"]) == (name, first)
    assert [r.version for r in origin.admin().function(name).releases] == [first]


def test_promote_and_rollback_to_a_version_call_the_service(origin: Origin, tmp_path: Path) -> None:
    name = _name()
    first = _deploy(origin, tmp_path, name, "one")
    directory = write_function(tmp_path / "canary", "async def handler(request):\n    return 'c'\n")
    (directory / "edge.toml").write_text(f'name = "{name}"\n')
    canary = origin.admin().deploy(name, bundle.pack(directory), canary=10).version
    browser = Browser(origin)
    csrf = browser.login()

    promoted = browser.post_json(f"/ui/functions/{name}/promote", {}, csrf)
    back = browser.post_json(f"/ui/functions/{name}/rollback", {"to": first[:10]}, csrf)
    nothing = browser.post_json(f"/ui/functions/{name}/promote", {}, csrf)
    unknown = browser.post_json("/ui/functions/no-such-function/promote", {}, csrf)

    assert promoted.status == 200
    assert back.status == 200
    assert [(r.version, r.weight) for r in origin.admin().function(name).releases] == [(first, 100)]
    assert canary != first
    assert (nothing.status, nothing.json()) == (409, {"error": f"`{name}` has no canary to promote"})
    assert (unknown.status, unknown.json()) == (404, {"error": "no function named `no-such-function`"})


def test_logout_ends_the_session_and_clears_the_cookie(origin: Origin) -> None:
    browser = Browser(origin)
    csrf = browser.login()
    cookie = browser.cookies["edge_session"]

    refused = browser.form("/logout", {"csrf": "wrong"})
    assert refused.status == 403
    assert browser.send("GET", "/ui/state").status == 200
    answer = browser.form("/logout", {"csrf": csrf})

    assert (answer.status, answer.header("location")) == (303, "/")
    assert answer.header("set-cookie") == "edge_session=; Max-Age=0; Path=/; HttpOnly; SameSite=Strict"
    browser.cookies["edge_session"] = cookie  # the old cookie is worth nothing now
    assert browser.send("GET", "/ui/state").status == 401
    assert "csrf-token" not in browser.send("GET", "/").text


def _register(origin: Origin, node_token: str, node_id: str, labels: dict[str, str]) -> None:
    info = NodeInfo(
        node_id=node_id, hostname=f"{node_id}.local", arch="x86_64", python="3.13", cpus=2,
        memory_bytes=1 << 30, labels=labels,
    )  # fmt: skip
    origin.client(node_token).register(info)


def test_state_aggregates_the_nodes_reports(origin: Origin, tmp_path: Path) -> None:
    name = _name()
    version = _deploy(origin, tmp_path, name, "one")
    token = origin.token("node")
    nodes = [f"{name}-a", f"{name}-b"]
    figures = [
        FunctionStats(name=name, version=version, requests=100, errors=4, client_errors=2, timeouts=1,
                      cold_starts=1, rps=3.0, error_rate=0.1, p50_ms=2.0, p99_ms=9.0),
        FunctionStats(name=name, version=version, requests=50, errors=0, client_errors=1, timeouts=0,
                      cold_starts=2, rps=1.0, error_rate=0.0, p50_ms=6.0, p99_ms=30.0),
    ]  # fmt: skip
    revision = origin.admin().health().revision
    for node_id, stats in zip(nodes, figures, strict=True):
        _register(origin, token, node_id, {"site": "lab"})
        origin.client(token).report(
            NodeReport(
                node_id=node_id,
                applied_revision=revision - 1,
                functions=[FunctionStatus(name=name, versions=[version])],
                stats=[stats],
            )
        )
    browser = Browser(origin)
    browser.login()

    answer = browser.send("GET", "/ui/state")

    assert answer.header("cache-control") == "no-store"
    state = answer.json()
    assert isinstance(state, dict)
    assert state["revision"] == revision
    function = next(f for f in state["functions"] if f["name"] == name)
    expected = {
        "rps": 4.0, "error_rate": 0.075, "p50_ms": 3.0, "p99_ms": 30.0, "requests": 150, "errors": 4,
        "client_errors": 3, "timeouts": 1, "cold_starts": 3,
    }  # fmt: skip
    assert function["traffic"] == pytest.approx(expected)
    assert [v["traffic"] for v in function["versions"]] == [pytest.approx(expected)]
    assert function["releases"] == [{"version": version, "weight": 100}]
    assert (function["previous"], function["errors"], function["routes"]) == (None, {}, [])
    shown = {n["node_id"]: n for n in state["nodes"] if n["node_id"] in nodes}
    assert {k: (n["applied_revision"], n["lag"], n["live"], n["labels"]) for k, n in shown.items()} == {
        node_id: (revision - 1, 1, True, {"site": "lab"}) for node_id in nodes
    }
    assert all(0 <= n["last_seen_s"] < 5 and n["errors"] == [] for n in shown.values())
    assert state["deploys"][0] == {
        "function": name, "version": version, "created_at": state["deploys"][0]["created_at"], "weight": 100
    }  # fmt: skip


def test_data_reaches_the_page_only_as_json_text(origin: Origin, tmp_path: Path) -> None:
    name = _name()
    version = _deploy(origin, tmp_path, name, "one")
    token = origin.token("node")
    node_id = f"{name}-xss"
    script = "<script>window.__xss = 1</script><img src=x onerror='window.__xss = 2'>"
    _register(origin, token, node_id, {"note": script})
    origin.client(token).report(
        NodeReport(
            node_id=node_id,
            applied_revision=0,
            functions=[FunctionStatus(name=name, versions=[version], state="error", error=script)],
            errors=[script],
        )
    )
    browser = Browser(origin)
    browser.login()

    page = browser.send("GET", "/")
    state = browser.send("GET", "/ui/state")

    assert "__xss" not in page.text and name not in page.text
    decoded = state.json()
    assert isinstance(decoded, dict)
    function = next(f for f in decoded["functions"] if f["name"] == name)
    assert function["errors"] == {node_id: script}
    assert function["versions"][0]["failed_on"] == {node_id: script}
    script_js = browser.send("GET", "/ui/static/dashboard.js")
    assert script_js.header("content-type") == "text/javascript; charset=utf-8"
    assert "innerHTML" not in script_js.text and "insertAdjacentHTML" not in script_js.text


def test_static_files_are_only_the_pages_own(origin: Origin) -> None:
    browser = Browser(origin)

    css = browser.send("GET", "/ui/static/dashboard.css")
    other = browser.send("GET", "/ui/static/login.html")
    dots = browser.send("GET", "/ui/static/..")

    assert (css.status, css.header("content-type")) == (200, "text/css; charset=utf-8")
    message = "no dashboard file 'login.html'; there are dashboard.css, dashboard.js, icon.svg"
    assert (other.status, other.json()) == (404, {"error": message})
    assert dots.status == 404


def test_a_session_ends_at_its_expiry() -> None:
    now = [1000.0]
    sessions = Sessions(lambda: now[0], lifetime_s=60)
    cookie, session = sessions.create("hash")

    assert sessions.get(cookie) is session
    assert sessions.get("other") is None
    now[0] += 59.9
    assert sessions.get(cookie) is session
    now[0] += 0.1
    assert sessions.get(cookie) is None
    now[0] -= 1  # forgotten, not just hidden
    assert sessions.get(cookie) is None


def test_sessions_are_stored_by_hash_and_bounded() -> None:
    sessions = Sessions(lambda: 0.0, limit=2)
    oldest, _ = sessions.create("hash")
    middle, _ = sessions.create("hash")

    assert oldest not in repr(sessions.__dict__)
    newest, _ = sessions.create("hash")
    assert [sessions.get(c) is not None for c in (oldest, middle, newest)] == [False, True, True]
    sessions.drop(middle)
    assert sessions.get(middle) is None


def test_combine_sums_rates_and_weights_the_rest() -> None:
    fast = FunctionStats(name="f", version="v", requests=10, rps=9.0, error_rate=0.0, p50_ms=1.0, p99_ms=4.0)
    slow = FunctionStats(name="f", version="v", requests=5, rps=1.0, error_rate=1.0, p50_ms=11.0, p99_ms=50.0)
    idle = FunctionStats(name="f", version="v", requests=7, p99_ms=999.0)

    combined = combine([fast, slow, idle])

    assert (combined.rps, combined.error_rate, combined.p50_ms, combined.p99_ms) == (10.0, 0.1, 2.0, 50.0)
    assert combined.requests == 22
    assert combine([]).p99_ms == 0.0


def test_sessions_end_with_the_origin(tmp_path: Path) -> None:
    with running_origin(tmp_path / "data") as fresh:
        browser = Browser(fresh)
        browser.login()
        assert browser.send("GET", "/ui/state").status == 200
    with running_origin(tmp_path / "data") as again:
        browser.origin = again
        assert browser.send("GET", "/ui/state").status == 401


def test_a_stale_nodes_counters_count_but_not_its_last_minute(tmp_path: Path) -> None:
    now = [1000.0]
    app_origin = build_origin(
        OriginSettings(data_dir=str(tmp_path / "data"), heartbeat_interval_s=1.0), clock=lambda: now[0]
    )
    version = "a" * 64
    app_origin.deploy("hello", version, 10, Manifest(name="hello"), None)
    for node_id, rps in (("old", 5.0), ("recent", 2.0)):
        now[0] += 2.0
        app_origin.register(
            NodeInfo(node_id=node_id, hostname=node_id, arch="x", python="3.13", cpus=1, memory_bytes=1)
        )
        stats = FunctionStats(name="hello", version=version, requests=10, errors=1, rps=rps, p99_ms=rps)
        app_origin.seen(node_id, NodeReport(node_id=node_id, applied_revision=0, stats=[stats]))
    now[0] += 1.5  # "old" was seen 3.5 s ago: more than 3 heartbeat intervals, so it is stale.

    state = dashboard_state(app_origin)

    assert [(n.node_id, n.live, n.lag, n.last_seen_s) for n in state.nodes] == [
        ("old", False, 1, 3.5),
        ("recent", True, 1, 1.5),
    ]
    traffic = state.functions[0].traffic
    assert (traffic.rps, traffic.p99_ms, traffic.requests, traffic.errors) == (2.0, 2.0, 20, 2)
    assert state.functions[0].previous is None
    assert [(d.function, d.version, d.weight) for d in state.deploys] == [("hello", version, 100)]
    app_origin.store.close()
