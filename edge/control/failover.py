"""A node given several origins (`--origin URL1,URL2`): one client that moves to the next origin when
the one it uses cannot be reached or answers 5xx.

Every origin on one database serves the same signed state (same revision, same key), so a node may
ask any of them; it keeps asking the one that answered last. A long poll cut by its origin dying
is sent again at once to the next one.

The admin CLI (`edge deploy --origin URL1,URL2`, edge/cli/_origin.py) uses the same client with
`resend=False`: a request that changes something (POST, PUT, DELETE) goes to the next origin only
when it cannot have reached the one tried (connecting failed), never after it was sent and no
answer or a 5xx came back, since the origin may have applied it (a rollback applied twice goes
back two versions). Reads go to the next origin in every case.
"""

from __future__ import annotations

import threading

from edge.control.client import ControlError, OriginClient, OriginError, OriginUnreachable, Progress

__all__ = ["FailoverClient", "origin_client", "origin_urls"]

# Requests that change nothing: sent to the next origin whatever happened to them.
_READS = frozenset({"GET", "HEAD"})


def origin_urls(spec: str) -> list[str]:
    """The URLs in `URL[,URL...]`; raises ValueError for an empty entry."""
    urls = [url.strip() for url in spec.split(",")]
    if not all(urls):
        raise ValueError(
            f"origin URL: Expected http(s)://host[:port], or several separated by commas, got {spec!r}"
        )
    return urls


def origin_client(
    spec: str,
    token: str | None,
    timeout: float = 30.0,
    ca_file: str | None = None,
    keep_alive: bool = False,
    connect_timeout: float | None = None,
    resend: bool = True,
) -> OriginClient:
    """A client for `URL` or, for `URL1,URL2,...`, one that fails over between them (`resend`: see
    FailoverClient); raises ValueError for a URL that is not one."""
    urls = origin_urls(spec)
    if len(urls) == 1:
        return OriginClient(urls[0], token, timeout, ca_file, keep_alive, connect_timeout)
    return FailoverClient(urls, token, timeout, ca_file, keep_alive, connect_timeout, resend)


class FailoverClient(OriginClient):
    """An `OriginClient` over several origins: each call goes to the current one and, when that one
    is unreachable or answers 5xx, to the others in turn; the first that answers becomes current.

    Without `resend`, a POST, PUT or DELETE moves on only while no origin can have received it
    (connecting failed); once one was sent it, its answer or failure is the call's."""

    def __init__(
        self,
        urls: list[str],
        token: str | None,
        timeout: float = 30.0,
        ca_file: str | None = None,
        keep_alive: bool = False,
        connect_timeout: float | None = None,
        resend: bool = True,
    ) -> None:
        self.resend = resend
        self.clients = [
            OriginClient(url, token, timeout, ca_file, keep_alive, connect_timeout) for url in urls
        ]
        super().__init__(urls[0], token, timeout, ca_file, keep_alive, connect_timeout)
        self._current = 0
        self._switch = threading.Lock()

    def close(self) -> None:
        """Close every origin's idle connections."""
        for client in self.clients:
            client.close()

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
        """Send to the current origin, then to each other one while they fail to answer."""
        start = self._current
        failures: list[ControlError] = []
        resend = self.resend or method in _READS
        for step in range(len(self.clients)):
            index = (start + step) % len(self.clients)
            client = self.clients[index]
            try:
                answer = client.request(
                    method, path, body, content_type=content_type, timeout=timeout, progress=progress
                )
            except OriginUnreachable as exc:
                if exc.sent and not resend:
                    raise _maybe_applied(exc, method) from None
                failures.append(exc)
                continue
            except OriginError as exc:
                if exc.status < 500 or not resend:
                    raise
                failures.append(exc)
                continue
            if index != self._current:
                with self._switch:
                    self._current = index
                self.url = client.url
            return answer
        if len(failures) == 1:
            raise failures[0]
        raise OriginUnreachable("; ".join(str(exc) for exc in failures))


def _maybe_applied(exc: OriginUnreachable, method: str) -> OriginUnreachable:
    """The error for a change that reached an origin and got no answer: not sent to another."""
    error = OriginUnreachable(
        f"{exc} (after the {method} was sent: the origin may have applied it, so it was not sent"
        " to the next origin; look before sending it again, e.g. with `edge versions NAME`)"
    )
    error.sent = True
    return error
