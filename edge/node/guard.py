"""A function version's `[auth]` and `[cors]`, enforced by the node before the cache and the function.

`build_guard` turns a manifest's tables into a `Guard` once per version (None when it has
neither, so functions without them pay one dict lookup per request). `Guard.check` runs after
routing, before the cache lookup and before the body is read: it answers CORS preflights itself,
refuses requests without valid credentials (401) or with an identity not meant for this
function (403), and otherwise gives the request headers the function sees (the verified identity
in `x-edge-auth-*`, whatever the client sent under those names removed) and the CORS headers its
response gets. docs/auth.md describes the manifest keys and the answers.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, Protocol

import msgspec

from isolates.access import AuthPolicy, CorsPolicy
from isolates.manifest import MANIFEST_NAME, Manifest, ManifestError

if TYPE_CHECKING:  # PyJWT (and cryptography) are imported only by nodes with a `type = "jwt"` function
    from jwt import PyJWK

__all__ = ["IDENTITY_HEADERS", "Admitted", "Answer", "Guard", "build_guard", "with_cors"]

Headers = list[tuple[bytes, bytes]]

IDENTITY_HEADERS = (b"x-edge-auth-subject", b"x-edge-auth-claims")
_SUBJECT, _CLAIMS = IDENTITY_HEADERS
_JSON = (b"content-type", b"application/json")
_CORS_NAMES = frozenset(
    {
        b"access-control-allow-origin",
        b"access-control-allow-credentials",
        b"access-control-expose-headers",
    }
)
_VARY_ORIGIN = (b"vary", b"Origin")
# Tokens verified once are remembered per version (PyJWT takes ~0.2 ms a token here); their
# validity times are still checked on every request.
MAX_REMEMBERED_TOKENS = 512
_VARY_PREFLIGHT = (b"vary", b"Origin, Access-Control-Request-Method, Access-Control-Request-Headers")


class Named(Protocol):
    """A request's headers by (lower-case) name: a dict, or a front end's lazy view."""

    def get(self, name: bytes, /) -> bytes | None: ...

    def __contains__(self, name: object, /) -> bool: ...


class Answer(NamedTuple):
    """What the node sends instead of running the function: a preflight reply, a 401 or a 403."""

    status: int
    headers: Headers
    body: bytes


class Admitted(NamedTuple):
    """A request the function may answer: its headers as the function sees them, and the CORS
    headers its response gets (None: the function has no [cors])."""

    headers: Headers
    cors: Headers | None


class _Refused(Exception):
    """A credential that does not admit the request: 401 (no identity) or 403 (not for us)."""

    def __init__(self, status: int, message: str, error: str) -> None:
        super().__init__(message)
        self.status, self.message, self.error = status, message, error


class Guard:
    """One function version's auth and CORS policy, parsed once."""

    def __init__(
        self,
        function: str,
        auth: AuthPolicy | None,
        cors: CorsPolicy | None,
        keys: dict[str, PyJWK],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.function = function
        self._clock = clock
        # Token -> (valid from, valid until, identity headers): tokens this guard verified.
        self._verified: dict[bytes, tuple[float, float, Headers]] = {}
        self.auth = auth
        self.cors = cors
        self._keys = keys
        self._header = auth.header.encode() if auth is not None else b""
        self._hashes = [digest.encode() for digest in auth.keys_sha256] if auth is not None else []
        public = auth.public if auth is not None else []
        self._public = frozenset(path for path in public if not path.endswith("/"))
        self._public_prefixes = tuple(path for path in public if path.endswith("/"))
        if auth is not None and auth.header == "authorization":
            self._challenge = f'Bearer realm="{function}"'
        else:
            self._challenge = f'ApiKey realm="{function}", header="{self._header.decode()}"'
        self._audience = [] if auth is None else auth.audience
        self._required = ["exp", "iss", "aud", *(auth.required_claims if auth is not None else [])]
        if cors is not None:
            self._any_origin = cors.origins == ["*"]
            self._origins = frozenset(origin.encode() for origin in cors.origins)
            self._methods = frozenset(cors.methods)
            self._allowed_headers = frozenset(cors.headers)
            extra: Headers = []
            if cors.credentials:
                extra.append((b"access-control-allow-credentials", b"true"))
            if cors.expose_headers:
                extra.append((b"access-control-expose-headers", ", ".join(cors.expose_headers).encode()))
            self._cors_extra = extra
            self._preflight_extra = [
                (b"access-control-allow-methods", ", ".join(cors.methods).encode()),
                (b"access-control-max-age", str(cors.max_age).encode()),
            ]

    def check(
        self, method: str, path: str, headers: Headers, named: Named, request_id: str
    ) -> Answer | Admitted:
        """Answer a preflight or refuse a request (Answer), or admit it (Admitted); never raises."""
        cors = None
        if self.cors is not None:
            origin = named.get(b"origin")
            if method == "OPTIONS" and origin is not None and b"access-control-request-method" in named:
                return self._preflight(origin, named, request_id)
            cors = self._cors_headers(origin)
        if b"x-edge-auth-subject" in named or b"x-edge-auth-claims" in named:
            headers = [header for header in headers if header[0] not in IDENTITY_HEADERS]
        auth = self.auth
        if auth is None or path in self._public or path.startswith(self._public_prefixes):
            return Admitted(headers, cors)
        credential = self._credential(named.get(self._header))
        try:
            if credential is None:
                how = "Authorization: Bearer <credential>" if auth.header == "authorization" else auth.header
                raise _Refused(401, f"missing credentials: send `{how}`", "")
            identity = self._verify(credential)
        except _Refused as refused:
            challenge = self._challenge
            if refused.error:
                description = refused.message.replace('"', "'")
                challenge += f', error="{refused.error}", error_description="{description}"'
            refusal = [(b"www-authenticate", challenge.encode())]
            return _answer(refused.status, refused.message, request_id, [*refusal, *(cors or [])])
        return Admitted([*headers, *identity], cors)

    def _credential(self, value: bytes | None) -> bytes | None:
        if value is None:
            return None
        if self._header == b"authorization":
            scheme, _, value = value.partition(b" ")
            if scheme.lower() != b"bearer":
                return None
        value = value.strip()
        return value or None

    def _verify(self, credential: bytes) -> Headers:
        """The identity headers for a valid credential; raises _Refused."""
        auth = self.auth
        if auth is None:  # never: check() returns before
            return []
        if auth.type == "token":
            presented = hashlib.sha256(credential).hexdigest().encode()
            matched = b""
            for known in self._hashes:  # every one, so the time does not tell which matched
                if hmac.compare_digest(presented, known):
                    matched = known
            if not matched:
                raise _Refused(401, "invalid API key", "invalid_token")
            return [(_SUBJECT, b"key:" + matched[:12])]
        return self._verify_jwt(auth, credential)

    def _verify_jwt(self, auth: AuthPolicy, token: bytes) -> Headers:
        """PyJWT checks a token once; its validity times are checked here, on every request, by
        the guard's clock."""
        remembered = self._verified.get(token)
        if remembered is None:
            remembered = self._decode_jwt(auth, token)
            if len(self._verified) >= MAX_REMEMBERED_TOKENS:
                del self._verified[next(iter(self._verified))]  # the oldest
            self._verified[token] = remembered
        now = self._clock()
        if now >= remembered[1]:
            del self._verified[token]
            raise _Refused(401, "invalid token: expired", "invalid_token")
        if now < remembered[0]:
            raise _Refused(401, "invalid token: not valid yet (nbf)", "invalid_token")
        return remembered[2]

    def _decode_jwt(self, auth: AuthPolicy, token: bytes) -> tuple[float, float, Headers]:
        """Verify a token's signature and claims but its times: (valid from, valid until, identity)."""
        import jwt
        from jwt.exceptions import InvalidAudienceError, PyJWTError

        try:
            header = jwt.get_unverified_header(token)
            algorithm = header.get("alg")
            if algorithm not in auth.algorithms:
                raise _Refused(
                    401,
                    f"invalid token: algorithm {algorithm!r} is not in [auth] algorithms",
                    "invalid_token",
                )
            kid = header.get("kid", "")
            key = self._keys.get(kid) if isinstance(kid, str) else None
            if key is None and not kid and len(self._keys) == 1:
                key = next(iter(self._keys.values()))
            if key is None:
                raise _Refused(401, f"invalid token: no key with kid {kid!r} in the JWKS", "invalid_token")
            claims = jwt.decode(
                token,
                key.key,
                algorithms=[algorithm],
                issuer=auth.issuer,
                audience=self._audience,
                leeway=auth.leeway,  # for `iat`; exp and nbf are checked by _verify_jwt
                options={"require": self._required, "verify_exp": False, "verify_nbf": False},
            )
        except InvalidAudienceError as exc:
            raise _Refused(403, f"token not for this function: {exc}", "insufficient_scope") from None
        except PyJWTError as exc:
            raise _Refused(401, f"invalid token: {exc}", "invalid_token") from None
        expires, not_before = claims["exp"], claims.get("nbf", float("-inf"))
        for name, value in (("exp", expires), ("nbf", not_before)):
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise _Refused(401, f"invalid token: `{name}` is not a number", "invalid_token")
        subject = claims.get("sub", "")
        identity = [(_CLAIMS, json.dumps(claims, separators=(",", ":")).encode())]
        if isinstance(subject, str):
            identity.append((_SUBJECT, json.dumps(subject)[1:-1].encode()))
        return not_before - auth.leeway, expires + auth.leeway, identity

    def _cors_headers(self, origin: bytes | None) -> Headers:
        """What an actual response gets for a request from `origin`."""
        if self._any_origin:
            return [(b"access-control-allow-origin", b"*"), *self._cors_extra]
        if origin is not None and origin in self._origins:
            return [(b"access-control-allow-origin", origin), _VARY_ORIGIN, *self._cors_extra]
        return [_VARY_ORIGIN]

    def _preflight(self, origin: bytes, named: Named, request_id: str) -> Answer:
        """Answer an OPTIONS preflight without the function (and without credentials: browsers send none)."""
        vary = [_VARY_PREFLIGHT]
        if not self._any_origin and origin not in self._origins:
            shown = origin.decode("latin-1")
            return _answer(403, f"CORS: origin {shown!r} is not in [cors] origins", request_id, vary)
        wanted = (named.get(b"access-control-request-method") or b"").decode("latin-1")
        if wanted not in self._methods:
            return _answer(403, f"CORS: method {wanted!r} is not in [cors] methods", request_id, vary)
        requested = (named.get(b"access-control-request-headers") or b"").decode("latin-1")
        names = [name.strip().lower() for name in requested.split(",") if name.strip()]
        if "*" not in self._allowed_headers:
            refused = [name for name in names if name not in self._allowed_headers]
            if refused:
                message = f"CORS: request headers {', '.join(refused)} are not in [cors] headers"
                return _answer(403, message, request_id, vary)
        headers = [*self._cors_headers(origin), *self._preflight_extra, *vary]
        headers = [header for header in headers if header != _VARY_ORIGIN]
        if names:
            headers.append((b"access-control-allow-headers", ", ".join(names).encode()))
        return Answer(204, headers, b"")


def _answer(status: int, message: str, request_id: str, headers: Headers) -> Answer:
    body = msgspec.json.encode({"error": message, "request_id": request_id})
    return Answer(status, [_JSON, *headers], body)


def with_cors(headers: Headers, cors: Headers) -> Headers:
    """A response's headers with the node's CORS headers in place of the function's own."""
    return [*(header for header in headers if header[0] not in _CORS_NAMES), *cors]


def build_guard(
    manifest: Manifest, directory: Path | None, fetched: Mapping[str, str], source: str = MANIFEST_NAME
) -> Guard | None:
    """The guard of one function version; None when its manifest has neither [auth] nor [cors].

    `directory` holds the bundle (for `jwks_file`); `fetched` maps each `jwks_url` to the key set
    the origin shipped. Raises ManifestError naming the file and the key.
    """
    auth, cors = manifest.auth, manifest.cors
    if auth is None and cors is None:
        return None
    keys: dict[str, PyJWK] = {}
    if auth is not None and auth.type == "jwt":
        from edge.control.jwks import JwksError, parse_jwks

        if auth.jwks_file:
            path = (directory or Path()) / auth.jwks_file
            try:
                data: bytes | str = path.read_bytes()
            except OSError as exc:
                raise ManifestError(
                    f"{source}: cannot read `$.auth.jwks_file` {auth.jwks_file!r}: {exc.strerror};"
                    " put the JWKS file in the function's directory"
                ) from None
            where = f"{source}: `$.auth.jwks_file` {auth.jwks_file}"
        else:
            if auth.jwks_url not in fetched:
                raise ManifestError(
                    f"{source}: `$.auth.jwks_url` {auth.jwks_url!r}: no key set was shipped for it; nodes"
                    " never fetch keys: deploy through an origin, or use `jwks_file` (a file in the bundle)"
                )
            data, where = fetched[auth.jwks_url], f"{source}: `$.auth.jwks_url` {auth.jwks_url}"
        try:
            keys = parse_jwks(data, where)
        except JwksError as exc:
            raise ManifestError(str(exc)) from None
    return Guard(manifest.name, auth, cors, keys)
