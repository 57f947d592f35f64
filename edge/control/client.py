"""A blocking client for the origin over http.client: the node's calls and the admin calls."""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import threading
import urllib.parse
from collections.abc import Callable
from typing import Any

import msgspec

from edge.bundle import digest
from edge.control.admin import (
    FunctionDetail,
    FunctionInfo,
    Health,
    KeyForgotten,
    NewToken,
    NodesList,
    PurgeRequest,
    PurgeResult,
    ReleaseResult,
    Removed,
    RollbackRequest,
    SecretChanged,
    SecretList,
    TokenInfo,
    TokenRequest,
)
from edge.control.messages import NodeInfo, NodeReport, PublicKey, PurgeKind, Registered, SignedState

__all__ = [
    "BlobMismatch",
    "ControlError",
    "OriginClient",
    "OriginError",
    "OriginUnreachable",
    "OriginUntrusted",
    "Progress",
    "tune_socket",
]

Progress = Callable[[int, int], None]
"""Called with (bytes sent, total bytes) while a bundle uploads."""

_CHUNK = 64 * 1024
# Idle connections kept per client: a node's poll, report, log shipping and a bundle fetch at once.
_MAX_IDLE = 4
# A kept-alive connection that the origin closed while it sat idle fails in one of these ways
# before any answer came back: sending the request again on a new connection is safe.
_STALE = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError, ssl.SSLEOFError)
# What a TLS server sends back to a plain-HTTP request: an alert record (content type 21, TLS 1.x).
_TLS_ALERT = "\x15\x03"
# OpenSSL's reasons when the other end answered in plain HTTP, not TLS.
_NOT_TLS = ("WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG", "HTTP_REQUEST")
# The origin answers a long poll at its timeout; a read that waits this much longer has lost the
# answer (a silent cut, a hung origin) and gives up rather than wait for TCP to retransmit.
POLL_GRACE_S = 3.0
# TCP keep-alive on every connection to the origin: probes after 2 s idle, every second, three
# unanswered and the connection is dead. TCP_USER_TIMEOUT bounds how long sent data may stay
# unacknowledged. Together they end a connection through a silently cut link within ~5 s instead
# of after minutes of retransmission, also while a long poll waits for its answer.
KEEPALIVE = (2, 1, 3)
USER_TIMEOUT_MS = 5000


class ControlError(Exception):
    """Any failure talking to the origin."""


class OriginUnreachable(ControlError):
    """The origin could not be reached: connection refused, DNS, timeout, connection dropped.

    `sent` is False when no byte of the request can have reached the origin (connecting failed),
    True when it was sent, or partly, and no answer came: the origin may have acted on it."""

    sent = False


# How to fix what the origin refused for want of a (fitting) token: said once, for every command.
_TOKEN_FIXES = {
    401: (
        "pass an admin token with --token or EDGE_TOKEN (`edge up` keeps its admin token in"
        " .edge/up/origin/admin-token, `edge origin` in .edge/origin/admin-token); a node takes"
        " a node token with --token-file"
    ),
    403: (
        "this token's role cannot do that: pass an admin token with --token or EDGE_TOKEN"
        " (`edge up` keeps its admin token in .edge/up/origin/admin-token)"
    ),
}
_UNREACHABLE_FIX = (
    "is it running? Start one (`edge up`, or `edge origin`), or point EDGE_ORIGIN or --origin at it"
)


class OriginUntrusted(OriginUnreachable):
    """The origin's TLS certificate did not verify against --origin-ca (or the system's roots)."""


# Said when a certificate does not verify: where the file to pin comes from.
_CA_FIX = (
    "pass the origin's certificate with --origin-ca FILE (or EDGE_ORIGIN_CA; `edge origin"
    " --tls-self-signed` printed its path and sha256 fingerprint), or the CA that signed it"
)


class OriginError(ControlError):
    """The origin answered with an error status; `message` is its `{"error": ...}` text."""

    def __init__(self, status: int, message: str) -> None:
        reason = http.client.responses.get(status, "error").lower()
        fix = _TOKEN_FIXES.get(status)
        if status == 403 and "this token has" not in message:  # not a role refusal (node binding)
            fix = None
        super().__init__(f"{status} {reason}: {message}" + (f"; {fix}" if fix else ""))
        self.status = status
        self.message = message


class BlobMismatch(ControlError):
    """A downloaded blob whose sha256 is not the digest that was asked for."""


def tune_socket(sock: socket.socket) -> None:
    """Turn on keep-alive probes and a bound on unacknowledged data (see KEEPALIVE above)."""
    idle, interval, count = KEEPALIVE
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, idle)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, interval)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, count)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, USER_TIMEOUT_MS)


class _Connection(http.client.HTTPConnection):
    """HTTP with a tuned socket; `connect_timeout` limits connecting (and, for TLS, the handshake)."""

    connect_timeout: float | None = None

    def connect(self) -> None:
        read_timeout = self.timeout
        if self.connect_timeout is not None:
            self.timeout = min(self.connect_timeout, read_timeout or self.connect_timeout)
        try:
            super().connect()  # HTTPSConnection's, for _TLSConnection: connect, then the handshake
        finally:
            self.timeout = read_timeout
        tune_socket(self.sock)
        self.sock.settimeout(read_timeout)


class _TLSConnection(_Connection, http.client.HTTPSConnection):
    """HTTPS with a tuned socket (the MRO puts HTTPSConnection.connect under _Connection's)."""


class OriginClient:
    """One origin at `url` with a bearer token, safe to use from several threads.

    With `keep_alive`, connections are kept between calls (a node's long-polls reuse one TLS
    session instead of a handshake each; `close()` ends them); one that the origin closed while
    idle is replaced and the call sent again. Without it, each call has its own connection.
    `ca_file` pins the origin's certificate (or its CA) for an https:// URL; without it the
    system's trust store decides. `connect_timeout` limits connecting (and the TLS handshake)
    apart from `timeout`, so an unreachable origin is given up on, and tried again, quickly."""

    def __init__(
        self,
        url: str,
        token: str | None,
        timeout: float = 30.0,
        ca_file: str | None = None,
        keep_alive: bool = False,
        connect_timeout: float | None = None,
    ) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"origin URL: Expected http://host[:port] or https://host[:port], got {url!r}")
        if ca_file and parts.scheme != "https":
            raise ValueError(
                f"origin URL: Expected an https:// URL with --origin-ca {ca_file}, got {url!r};"
                " use https:// (the origin serves TLS), or drop --origin-ca (EDGE_ORIGIN_CA)"
            )
        self.url = url.rstrip("/")
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port
        self._prefix = parts.path.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.poll_grace_s = POLL_GRACE_S
        self.ca_file = ca_file
        # Made once: loading the CA file for every connection would cost each call a file read.
        self._tls = None
        if self._https:
            # Imported for https only: it loads cryptography (≈ 10 MB of a local-mode node's RSS).
            from edge.control.tls import client_context

            self._tls = client_context(ca_file)
        self._keep_alive = keep_alive
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    def _connection(self, timeout: float) -> tuple[http.client.HTTPConnection, bool]:
        """An idle kept-alive connection (True) or a new one (False), with `timeout` set."""
        with self._lock:
            conn = self._idle.pop() if self._idle else None
        if conn is not None:
            conn.timeout = timeout
            if conn.sock is not None:
                conn.sock.settimeout(timeout)
            return conn, True
        fresh: _Connection | _TLSConnection
        if self._tls is not None:
            fresh = _TLSConnection(self._host, self._port, timeout=timeout, context=self._tls)
        else:
            fresh = _Connection(self._host, self._port, timeout=timeout)
        fresh.connect_timeout = self.connect_timeout
        return fresh, False

    def _keep(self, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            if self._keep_alive and len(self._idle) < _MAX_IDLE:
                self._idle.append(conn)
                return
        conn.close()

    def close(self) -> None:
        """Close the idle connections (calls after this open new ones)."""
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        *,
        content_type: str = "application/json",
        timeout: float | None = None,
        progress: Progress | None = None,
    ) -> tuple[int, bytes]:
        """Send one request and return (status, body); raises OriginError for 4xx/5xx."""
        headers = {"Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        if body is not None:
            headers["Content-Type"] = content_type
            headers["Content-Length"] = str(len(body))
        limit = self.timeout if timeout is None else timeout
        while True:
            conn, reused = self._connection(limit)
            if conn.sock is None:
                try:
                    conn.connect()
                except (OSError, http.client.HTTPException) as exc:
                    conn.close()
                    raise self._unreachable(exc) from None  # nothing was sent
            try:
                status, data, reusable = self._exchange(
                    conn, method, self._prefix + path, headers, body, progress
                )
            except _STALE as exc:
                conn.close()
                if reused:
                    continue  # the origin closed it while it sat idle: send on a new connection
                raise self._unreachable(exc, sent=True) from None
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                raise self._unreachable(exc, sent=True) from None
            except BaseException:
                conn.close()
                raise
            break
        if reusable:
            self._keep(conn)
        else:
            conn.close()
        if status >= 400:
            raise OriginError(status, _error_text(data))
        return status, data

    @staticmethod
    def _exchange(
        conn: http.client.HTTPConnection,
        method: str,
        path: str,
        headers: dict[str, str],
        body: bytes | None,
        progress: Progress | None,
    ) -> tuple[int, bytes, bool]:
        """Send one request on `conn`; returns (status, body, whether the connection may be reused)."""
        conn.putrequest(method, path)
        for name, value in headers.items():
            conn.putheader(name, value)
        conn.endheaders()
        if body is not None:
            try:
                for start in range(0, len(body), _CHUNK):
                    conn.send(body[start : start + _CHUNK])
                    if progress is not None:
                        progress(min(start + _CHUNK, len(body)), len(body))
            except OSError:
                # The origin may have refused the body early (400, oversize) and closed: read its answer.
                pass
        response = conn.getresponse()
        data = response.read()
        return response.status, data, not response.will_close

    def _unreachable(self, exc: BaseException, sent: bool = False) -> OriginUnreachable:
        """The error for a call that got no answer (`sent`: after its request went out)."""
        error = self._unreachable_error(exc)
        error.sent = sent
        return error

    def _unreachable_error(self, exc: BaseException) -> OriginUnreachable:
        """What went wrong, saying how to fix what TLS refused."""
        where = f"the origin at {self.url}"
        if isinstance(exc, ssl.SSLCertVerificationError):
            reason = exc.verify_message or str(exc)
            pinned = f" against --origin-ca {self.ca_file}" if self.ca_file else ""
            return OriginUntrusted(
                f"cannot verify the TLS certificate of {where}{pinned}: {reason}; {_CA_FIX}"
            )
        if isinstance(exc, ssl.SSLError) and exc.reason in _NOT_TLS:
            return OriginUnreachable(
                f"cannot reach {where}: it does not answer in TLS ({exc.reason}); start it with"
                " --tls-cert/--tls-key (or --tls-self-signed), or use an http:// URL"
            )
        if isinstance(exc, http.client.BadStatusLine) and str(exc.args[0]).startswith(_TLS_ALERT):
            return OriginUnreachable(
                f"cannot reach {where}: it answers in TLS, not plain HTTP; use an https:// URL"
                " (with --origin-ca FILE for its certificate)"
            )
        return OriginUnreachable(f"cannot reach {where}: {_describe(exc)}; {_UNREACHABLE_FIX}")

    def _call[T](self, method: str, path: str, type_: type[T], payload: object = None) -> T:
        body = None if payload is None else msgspec.json.encode(payload)
        _, data = self.request(method, path, body)
        return _decode(data, type_, f"{method} {path}")

    # The node's calls.

    def key(self) -> str:
        """The origin's public key (base64 raw ed25519)."""
        return self._call("GET", "/v1/key", PublicKey).public_key

    def register(self, info: NodeInfo) -> Registered:
        """Register this node (again); returns the heartbeat interval to use."""
        return self._call("POST", "/v1/nodes/register", Registered, info)

    def sync(self, revision: int, node_id: str, timeout: float = 25.0) -> SignedState | None:
        """Long-poll for a state newer than `revision`; None when nothing newer came in `timeout`."""
        query = urllib.parse.urlencode({"revision": revision, "node_id": node_id, "timeout": timeout})
        status, data = self.request("GET", f"/v1/sync?{query}", timeout=timeout + self.poll_grace_s)
        if status == 204:
            return None
        return _decode(data, SignedState, "GET /v1/sync")

    def blob(self, version: str) -> bytes:
        """The bundle with this sha256 digest; raises BlobMismatch when the bytes do not match it."""
        _, data = self.request("GET", f"/v1/blobs/{version}")
        actual = digest(data)
        if actual != version:
            raise BlobMismatch(f"blob {version}: the downloaded bytes have sha256 {actual}")
        return data

    def report(self, report: NodeReport) -> None:
        """Send a heartbeat with what this node has applied."""
        self.request("POST", f"/v1/nodes/{_quote(report.node_id)}/report", msgspec.json.encode(report))

    # The admin calls.

    def health(self) -> Health:
        """The origin's liveness and current revision (no auth needed)."""
        return self._call("GET", "/v1/health", Health)

    def functions(self) -> list[FunctionInfo]:
        """Every function with its live releases."""
        return self._call("GET", "/v1/functions", list[FunctionInfo])

    def function(self, name: str) -> FunctionDetail:
        """One function with all kept versions."""
        return self._call("GET", f"/v1/functions/{_quote(name)}", FunctionDetail)

    def deploy(
        self,
        name: str,
        bundle: bytes,
        canary: int | None = None,
        progress: Progress | None = None,
        force: bool = False,
    ) -> ReleaseResult:
        """Upload a bundle as a new version of `name` (100% or `canary` percent); `force` takes
        routes another function claims, which the origin refuses otherwise."""
        params = {} if canary is None else {"canary": canary}
        if force:
            params["force"] = 1
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        path = f"/v1/functions/{_quote(name)}/versions{query}"
        _, data = self.request(
            "POST",
            path,
            bundle,
            content_type="application/gzip",
            timeout=max(self.timeout, 120.0),
            progress=progress,
        )
        return _decode(data, ReleaseResult, f"POST {path}")

    def promote(self, name: str) -> ReleaseResult:
        """Give the canary 100% of the traffic."""
        return self._call("POST", f"/v1/functions/{_quote(name)}/promote", ReleaseResult)

    def rollback(self, name: str, to: str | None = None) -> ReleaseResult:
        """Go back to the previous version, or to `to` (a digest or unique prefix)."""
        path = f"/v1/functions/{_quote(name)}/rollback"
        return self._call("POST", path, ReleaseResult, RollbackRequest(to=to))

    def remove(self, name: str) -> Removed:
        """Remove a function and its versions."""
        return self._call("DELETE", f"/v1/functions/{_quote(name)}", Removed)

    def purge(self, name: str, kind: PurgeKind, value: str = "") -> PurgeResult:
        """Order every node to purge cached responses of `name`."""
        path = f"/v1/functions/{_quote(name)}/purges"
        return self._call("POST", path, PurgeResult, PurgeRequest(kind=kind, value=value))

    def nodes(self) -> NodesList:
        """Every registered node with its last report."""
        return self._call("GET", "/v1/nodes", NodesList)

    def secrets(self, name: str) -> SecretList:
        """The keys, sizes and update times of a function's secrets (never values)."""
        return self._call("GET", f"/v1/functions/{_quote(name)}/secrets", SecretList)

    def set_secret(self, name: str, key: str, value: bytes) -> SecretChanged:
        """Set one secret of `name` to `value` (sent as the body, never in the URL)."""
        path = f"/v1/functions/{_quote(name)}/secrets/{_quote(key)}"
        _, data = self.request("PUT", path, value, content_type="application/octet-stream")
        return _decode(data, SecretChanged, f"PUT {path}")

    def remove_secret(self, name: str, key: str) -> SecretChanged:
        """Remove one secret of `name`."""
        return self._call("DELETE", f"/v1/functions/{_quote(name)}/secrets/{_quote(key)}", SecretChanged)

    def forget_node_key(self, node_id: str) -> KeyForgotten:
        """Forget the public key a node registered (it may then register a new one)."""
        return self._call("DELETE", f"/v1/nodes/{_quote(node_id)}/key", KeyForgotten)

    def tokens(self) -> list[TokenInfo]:
        """Every token (by id, never the token itself), oldest first."""
        return self._call("GET", "/v1/tokens", list[TokenInfo])

    def create_token(
        self, role: str, expires_in_s: float | None = None, node_id: str | None = None
    ) -> NewToken:
        """Mint a token with `role`, expiring in `expires_in_s` seconds, bound to `node_id`."""
        request = TokenRequest(role=role, expires_in_s=expires_in_s, node_id=node_id)
        return self._call("POST", "/v1/tokens", NewToken, request)

    def revoke_token(self, token_id: str) -> TokenInfo:
        """Revoke the token with this id; refused from its next request on."""
        return self._call("POST", f"/v1/tokens/{_quote(token_id)}/revoke", TokenInfo)


def _quote(segment: str) -> str:
    return urllib.parse.quote(segment, safe="")


def _describe(exc: BaseException) -> str:
    if isinstance(exc, socket.timeout | TimeoutError):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def _error_text(data: bytes) -> str:
    try:
        body: Any = json.loads(data)
    except ValueError:
        return data.decode("utf-8", "replace").strip() or "(no message)"
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return str(body["error"])
    return data.decode("utf-8", "replace").strip()


def _decode[T](data: bytes, type_: type[T], what: str) -> T:
    try:
        return msgspec.json.decode(data, type=type_)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise ControlError(f"the origin's answer to {what} is not what was expected: {exc}") from None
