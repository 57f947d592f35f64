"""A blocking client for the origin over http.client: the node's calls and the admin calls."""

from __future__ import annotations

import http.client
import json
import socket
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

__all__ = ["BlobMismatch", "ControlError", "OriginClient", "OriginError", "OriginUnreachable", "Progress"]

Progress = Callable[[int, int], None]
"""Called with (bytes sent, total bytes) while a bundle uploads."""

_CHUNK = 64 * 1024


class ControlError(Exception):
    """Any failure talking to the origin."""


class OriginUnreachable(ControlError):
    """The origin could not be reached: connection refused, DNS, timeout, connection dropped."""


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


class OriginClient:
    """One origin at `url` with a bearer token; one connection per call, safe to use from a thread."""

    def __init__(self, url: str, token: str | None, timeout: float = 30.0) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"origin URL: Expected http://host[:port], got {url!r}")
        self.url = url.rstrip("/")
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port
        self._prefix = parts.path.rstrip("/")
        self.token = token
        self.timeout = timeout

    def _connection(self, timeout: float) -> http.client.HTTPConnection:
        if self._https:
            return http.client.HTTPSConnection(self._host, self._port, timeout=timeout)
        return http.client.HTTPConnection(self._host, self._port, timeout=timeout)

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
        conn = self._connection(self.timeout if timeout is None else timeout)
        try:
            conn.putrequest(method, self._prefix + path)
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
            status, data = response.status, response.read()
        except (OSError, http.client.HTTPException) as exc:
            raise OriginUnreachable(
                f"cannot reach the origin at {self.url}: {_describe(exc)}; {_UNREACHABLE_FIX}"
            ) from None
        finally:
            conn.close()
        if status >= 400:
            raise OriginError(status, _error_text(data))
        return status, data

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
        status, data = self.request("GET", f"/v1/sync?{query}", timeout=timeout + self.timeout)
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
