"""The web dashboard the origin serves (`ROUTES`): login, sessions, the page and the JSON it reads.

`GET /` is the page, or a login form without a session. `POST /login` takes an admin token (the
API's token table) and sets a random session cookie (`HttpOnly`, `SameSite=Strict`, `Path=/`,
`Secure` over https); sessions live in the origin's memory with an expiry and end with the origin.
The page reads `GET /ui/state` every few seconds and POSTs promote/rollback to `/ui/functions/...`,
which call the same `Origin` methods as `edge promote/rollback`. Every POST needs the session's
CSRF token (`X-CSRF-Token` header or `csrf` form field) and, when the browser sends `Origin`, one
naming this host. These routes are `public` for the bearer-token check: each handler checks the
session itself.
"""

from __future__ import annotations

import hmac
import html
import string
import urllib.parse
import weakref
from collections.abc import Awaitable, Callable
from pathlib import Path

import msgspec

from edge.control.admin import RollbackRequest
from edge.control.messages import FunctionStats, NodeReport, Release
from edge.origin import tokens
from edge.origin.datadir import hash_token
from edge.origin.http import Request, Response, json_response
from edge.origin.routes import PUBLIC, Route
from edge.origin.service import ApiError, Origin
from edge.origin.sessions import SESSION_LIFETIME_S, Session, Sessions

__all__ = [
    "COOKIE",
    "RECENT_DEPLOYS",
    "ROUTES",
    "DashboardState",
    "combine",
    "dashboard_state",
    "sessions_of",
]

COOKIE = "edge_session"
RECENT_DEPLOYS = 20
_MAX_FORM_BYTES = 8192
STATIC = Path(__file__).with_name("static")
_STATIC_FILES = {
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
    "icon.svg": "image/svg+xml",
}
# The page loads only its own script and stylesheet, and talks only to this origin.
_PAGE_HEADERS = [
    (
        "content-security-policy",
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self';"
        " form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    ),
    ("x-frame-options", "DENY"),
    ("x-content-type-options", "nosniff"),
    # "no-referrer" would make browsers send `Origin: null` on the login form's POST.
    ("referrer-policy", "same-origin"),
    ("cache-control", "no-store"),
]


# Sessions.


_SESSIONS: weakref.WeakKeyDictionary[Origin, Sessions] = weakref.WeakKeyDictionary()


def sessions_of(origin: Origin) -> Sessions:
    """The dashboard sessions of this origin (made on first use, on the origin's clock)."""
    found = _SESSIONS.get(origin)
    if found is None:
        found = _SESSIONS[origin] = Sessions(origin.clock)
    return found


def _cookie_value(request: Request) -> str | None:
    for part in request.headers.get("cookie", "").split(";"):
        name, _, value = part.strip().partition("=")
        if name == COOKIE and value:
            return value
    return None


def _session(origin: Origin, request: Request) -> Session | None:
    """The request's session, if it has a live one whose admin token is still valid (not revoked,
    expired or deleted)."""
    cookie = _cookie_value(request)
    if cookie is None:
        return None
    sessions = sessions_of(origin)
    session = sessions.get(cookie)
    if session is not None and not tokens.valid(origin.store.token(session.token_hash), origin.clock()):
        sessions.drop(cookie)
        return None
    return session


def _https(request: Request) -> bool:
    # A forwarded "https" only makes the cookie stricter, so the header need not be trusted.
    forwarded = request.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
    return request.scope.get("scheme") == "https" or forwarded == "https"


def _set_cookie(request: Request, value: str, max_age: int) -> tuple[str, str]:
    secure = "; Secure" if _https(request) else ""
    return (
        "set-cookie",
        f"{COOKIE}={value}; Max-Age={max_age}; Path=/; HttpOnly; SameSite=Strict{secure}",
    )


def _check_origin(request: Request) -> None:
    """Refuse a POST whose `Origin` header names another site (a browser sends it on POSTs)."""
    sent = request.headers.get("origin")
    if sent is None:
        return
    host = request.headers.get("host", "")
    if urllib.parse.urlsplit(sent).netloc != host or not host:
        raise ApiError(
            403, f"Origin header: Expected this dashboard's own origin (host {host!r}), got {sent!r}"
        )


def _check_csrf(session: Session, request: Request, form: dict[str, str] | None = None) -> None:
    sent = request.headers.get("x-csrf-token") or (form or {}).get("csrf", "")
    if not hmac.compare_digest(sent.encode(), session.csrf.encode()):
        raise ApiError(
            403,
            "CSRF token: Expected the session's token in the X-CSRF-Token header or the `csrf` form"
            f" field, got {'a wrong one' if sent else 'none'}; reload the dashboard and try again",
        )


# Pages.


def _template(name: str) -> string.Template:
    return string.Template((STATIC / name).read_text())


def _html(body: str, status: int = 200, headers: list[tuple[str, str]] | None = None) -> Response:
    return Response(
        status, body.encode(), "text/html; charset=utf-8", headers=[*_PAGE_HEADERS, *(headers or [])]
    )


def _login_page(error: str = "", status: int = 200) -> Response:
    shown = f'<p class="error" role="alert">{html.escape(error)}</p>' if error else ""
    return _html(_template("login.html").substitute(error=shown), status)


def _redirect(location: str, headers: list[tuple[str, str]]) -> Response:
    return Response(303, b"", "text/plain; charset=utf-8", headers=[("location", location), *headers])


async def _form(request: Request) -> dict[str, str]:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        raise ApiError(415, f"Content-Type: Expected application/x-www-form-urlencoded, got {kind!r}")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > _MAX_FORM_BYTES:
            raise ApiError(413, f"form: Expected at most {_MAX_FORM_BYTES} bytes")
    return dict(urllib.parse.parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))


async def page(origin: Origin, request: Request) -> Response:
    """The dashboard, or the login form without a session."""
    session = _session(origin, request)
    if session is None:
        return _login_page()
    return _html(_template("dashboard.html").substitute(csrf=html.escape(session.csrf)))


async def login(origin: Origin, request: Request) -> Response:
    """Check an admin token and start a session; the form again with 401 when it is wrong."""
    _check_origin(request)
    token = (await _form(request)).get("token", "").strip()
    if not token:
        return _login_page("Enter the origin's admin token.", 401)
    token_hash = hash_token(token)
    record = origin.store.token(token_hash)
    refused = None if record is None else tokens.problem(record, origin.clock())
    if refused is not None:
        return _login_page(f"This token is refused: {refused}.", 401)
    role = None if record is None else record.role
    if role is None:
        return _login_page(
            "Unknown token. Use an admin token: the first one is in the origin's data directory"
            " (admin-token); `edge origin token create --role admin` makes another.",
            401,
        )
    if role != "admin":
        return _login_page(f"This is a {role} token; log in with an admin token.", 401)
    cookie, _ = sessions_of(origin).create(token_hash)
    return _redirect("/", [_set_cookie(request, cookie, int(SESSION_LIFETIME_S))])


async def logout(origin: Origin, request: Request) -> Response:
    """End the session (CSRF-checked) and clear the cookie."""
    _check_origin(request)
    form = await _form(request)
    session = _session(origin, request)
    cookie = _cookie_value(request)
    if session is not None and cookie is not None:
        _check_csrf(session, request, form)
        sessions_of(origin).drop(cookie)
    return _redirect("/", [_set_cookie(request, "", 0)])


async def static(origin: Origin, request: Request) -> Response:
    """The page's script and stylesheet (no session needed: they hold no data)."""
    name = request.params["file"]
    kind = _STATIC_FILES.get(name)
    if kind is None:
        raise ApiError(404, f"no dashboard file {name!r}; there are {', '.join(sorted(_STATIC_FILES))}")
    headers = [("x-content-type-options", "nosniff"), ("cache-control", "no-cache")]
    return Response(200, (STATIC / name).read_bytes(), kind, headers=headers)


# The state the page shows.


class Traffic(msgspec.Struct, kw_only=True):
    """Traffic over the live nodes' latest reports: last-minute rates and cumulative counters.

    `rps` is summed; `error_rate` is weighted by each node's rps; `p50_ms` is the rps-weighted mean
    of the nodes' medians (an approximation); `p99_ms` is the worst node's p99 (an upper bound).
    """

    rps: float = 0.0
    error_rate: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    requests: int = 0
    errors: int = 0
    client_errors: int = 0
    timeouts: int = 0
    cold_starts: int = 0


class VersionView(msgspec.Struct, kw_only=True):
    """One kept version: its traffic share, when it was uploaded, its traffic and load failures."""

    version: str
    weight: int
    created_at: float
    size: int
    traffic: Traffic
    failed_on: dict[str, str] = {}  # node id -> the error it reported loading this version


class FunctionView(msgspec.Struct, kw_only=True):
    """One function: releases (first is stable), routes, kept versions (newest first), traffic."""

    name: str
    releases: list[Release]
    routes: list[str]
    versions: list[VersionView]
    traffic: Traffic
    previous: str | None  # what a plain rollback goes back to
    errors: dict[str, str] = {}  # node id -> its error for this function


class NodeView(msgspec.Struct, kw_only=True):
    """One node: who it is, what it applied against the origin's revision, when it last reported."""

    node_id: str
    hostname: str
    labels: dict[str, str]
    live: bool
    applied_revision: int | None
    lag: int | None  # revisions behind the origin
    last_seen_s: float  # seconds since it last polled or reported
    errors: list[str]


class DeployView(msgspec.Struct, kw_only=True):
    """A version by upload time: which function, its current weight."""

    function: str
    version: str
    created_at: float
    weight: int


class DashboardState(msgspec.Struct, kw_only=True):
    """`GET /ui/state`: everything the page shows."""

    revision: int
    now: float
    heartbeat_interval_s: float
    functions: list[FunctionView]
    nodes: list[NodeView]
    deploys: list[DeployView]


def combine(stats: list[FunctionStats]) -> Traffic:
    """Add up several nodes' (or versions') figures as `Traffic` says."""
    rps = sum(s.rps for s in stats)
    return Traffic(
        rps=rps,
        error_rate=sum(s.rps * s.error_rate for s in stats) / rps if rps else 0.0,
        p50_ms=sum(s.rps * s.p50_ms for s in stats) / rps if rps else 0.0,
        p99_ms=max((s.p99_ms for s in stats if s.rps), default=0.0),
        requests=sum(s.requests for s in stats),
        errors=sum(s.errors for s in stats),
        client_errors=sum(s.client_errors for s in stats),
        timeouts=sum(s.timeouts for s in stats),
        cold_starts=sum(s.cold_starts for s in stats),
    )


def _function_errors(reports: dict[str, NodeReport]) -> dict[str, dict[str, tuple[list[str], str]]]:
    """function -> node id -> (versions, error) for every function a node reports as not serving."""
    errors: dict[str, dict[str, tuple[list[str], str]]] = {}
    for node_id, report in reports.items():
        for status in report.functions:
            if status.error:
                errors.setdefault(status.name, {})[node_id] = (status.versions, status.error)
    return errors


def dashboard_state(origin: Origin) -> DashboardState:
    """What `GET /ui/state` answers, from the store and the nodes' latest reports."""
    now = origin.clock()
    listing = origin.nodes()
    reports = {n.info.node_id: n.report for n in listing.nodes if n.report is not None}
    live = {n.info.node_id for n in listing.nodes if n.live}
    stats: dict[tuple[str, str], list[FunctionStats]] = {}
    for node_id, report in reports.items():
        for item in report.stats:
            # A stale node's last-minute figures are not the last minute's: only its counters count.
            current = item if node_id in live else _counters_only(item)
            stats.setdefault((item.name, item.version), []).append(current)
    failures = _function_errors(reports)

    functions, deploys = [], []
    for record in origin.store.functions():
        weights = {r.version: r.weight for r in record.releases}
        function_errors = failures.get(record.name, {})
        versions = []
        for kept in origin.store.versions(record.name):
            failed_on = {
                node_id: error for node_id, (tried, error) in function_errors.items() if kept.version in tried
            }
            versions.append(
                VersionView(
                    version=kept.version,
                    weight=weights.get(kept.version, 0),
                    created_at=kept.created_at,
                    size=kept.size,
                    traffic=combine(stats.get((record.name, kept.version), [])),
                    failed_on=failed_on,
                )
            )
            deploys.append(
                DeployView(
                    function=record.name,
                    version=kept.version,
                    created_at=kept.created_at,
                    weight=weights.get(kept.version, 0),
                )
            )
        stable = origin.store.version(record.name, record.releases[0].version)
        functions.append(
            FunctionView(
                name=record.name,
                releases=record.releases,
                routes=stable.manifest.routes if stable else [],
                versions=versions,
                traffic=combine(
                    [s for (name, _), items in stats.items() if name == record.name for s in items]
                ),
                previous=_previous(record.releases, record.history),
                errors={node_id: error for node_id, (_, error) in function_errors.items()},
            )
        )
    deploys.sort(key=lambda d: d.created_at, reverse=True)
    return DashboardState(
        revision=listing.revision,
        now=now,
        heartbeat_interval_s=listing.heartbeat_interval_s,
        functions=functions,
        nodes=[
            NodeView(
                node_id=n.info.node_id,
                hostname=n.info.hostname,
                labels=n.info.labels,
                live=n.live,
                applied_revision=None if n.report is None else n.report.applied_revision,
                lag=None if n.report is None else max(0, listing.revision - n.report.applied_revision),
                last_seen_s=max(0.0, now - n.last_seen),
                errors=[] if n.report is None else n.report.errors,
            )
            for n in listing.nodes
        ],
        deploys=deploys[:RECENT_DEPLOYS],
    )


def _previous(releases: list[Release], history: list[str]) -> str | None:
    """What a plain rollback leaves serving: the stable version under a canary, else the one before."""
    if len(releases) > 1:
        return releases[0].version
    return history[-2] if len(history) > 1 else None


def _counters_only(item: FunctionStats) -> FunctionStats:
    return msgspec.structs.replace(item, rps=0.0, error_rate=0.0, p50_ms=0.0, p99_ms=0.0)


# The JSON API behind the page.

_Handler = Callable[[Origin, Request, Session], Awaitable[Response]]


def _with_session(handler: _Handler, post: bool) -> Callable[[Origin, Request], Awaitable[Response]]:
    async def checked(origin: Origin, request: Request) -> Response:
        session = _session(origin, request)
        if session is None:
            raise ApiError(401, "no dashboard session: log in at / with an admin token")
        if post:
            _check_origin(request)
            _check_csrf(session, request)
        return await handler(origin, request, session)

    checked.__doc__ = handler.__doc__
    return checked


async def state(origin: Origin, request: Request, session: Session) -> Response:
    """Functions, nodes, traffic and recent deploys."""
    response = json_response(dashboard_state(origin))
    response.headers.append(("cache-control", "no-store"))
    return response


async def promote(origin: Origin, request: Request, session: Session) -> Response:
    """As `edge promote NAME`."""
    return json_response(origin.promote(request.params["name"]))


async def rollback(origin: Origin, request: Request, session: Session) -> Response:
    """As `edge rollback NAME [--to VERSION]`; the body is `{"to": ...}` or `{}`."""
    body = await request.json(RollbackRequest)
    return json_response(origin.rollback(request.params["name"], body.to))


ROUTES: list[Route] = [
    Route("GET", "/", PUBLIC, page, public=True),
    Route("POST", "/login", PUBLIC, login, public=True),
    Route("POST", "/logout", PUBLIC, logout, public=True),
    Route("GET", "/ui/static/{file}", PUBLIC, static, public=True),
    Route("GET", "/ui/state", PUBLIC, _with_session(state, post=False), public=True),
    Route("POST", "/ui/functions/{name}/promote", PUBLIC, _with_session(promote, post=True), public=True),
    Route("POST", "/ui/functions/{name}/rollback", PUBLIC, _with_session(rollback, post=True), public=True),
]
