"""The dashboard's server-side sessions: random cookie values, kept hashed, with an expiry."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable

import msgspec

__all__ = ["MAX_SESSIONS", "SESSION_LIFETIME_S", "Session", "Sessions"]

SESSION_LIFETIME_S = 8 * 3600
MAX_SESSIONS = 1000


class Session(msgspec.Struct, kw_only=True):
    """One logged-in browser: its CSRF token, the admin token it logged in with (hashed), expiry."""

    csrf: str
    token_hash: str
    expires: float


class Sessions:
    """Server-side sessions keyed by the sha256 of the cookie value (the cookie is never stored)."""

    def __init__(
        self, clock: Callable[[], float], lifetime_s: float = SESSION_LIFETIME_S, limit: int = MAX_SESSIONS
    ) -> None:
        self.clock = clock
        self.lifetime_s = lifetime_s
        self.limit = limit
        self._sessions: dict[str, Session] = {}

    def create(self, token_hash: str) -> tuple[str, Session]:
        """A new session for the admin token with this hash: (cookie value, session)."""
        now = self.clock()
        self._sessions = {k: s for k, s in self._sessions.items() if s.expires > now}
        while len(self._sessions) >= self.limit:  # dicts keep insertion order: drop the oldest
            del self._sessions[next(iter(self._sessions))]
        cookie = secrets.token_urlsafe(32)
        session = Session(
            csrf=secrets.token_urlsafe(32), token_hash=token_hash, expires=now + self.lifetime_s
        )
        self._sessions[_key(cookie)] = session
        return cookie, session

    def get(self, cookie: str) -> Session | None:
        """The live session for this cookie value, or None (an expired one is forgotten)."""
        key = _key(cookie)
        session = self._sessions.get(key)
        if session is not None and session.expires <= self.clock():
            del self._sessions[key]
            return None
        return session

    def drop(self, cookie: str) -> None:
        """End the session for this cookie value."""
        self._sessions.pop(_key(cookie), None)


def _key(cookie: str) -> str:
    return hashlib.sha256(cookie.encode()).hexdigest()
