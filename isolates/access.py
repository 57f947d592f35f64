"""`[auth]` and `[cors]` in `edge.toml`: who may call a function, and which web pages may.

Only the schema and its checks live here (the manifest decodes them); the node enforces them in
`edge/node/guard.py`, before the cache and before the function (docs/auth.md).
"""

from __future__ import annotations

import re
from collections.abc import Callable

import msgspec

__all__ = ["AUTH_TYPES", "JWT_ALGORITHMS", "AuthPolicy", "CorsPolicy", "check_access"]

# `type = ...`: static API keys (their sha256 in the manifest) or JWTs verified against a JWKS.
AUTH_TYPES = ("token", "jwt")
# Asymmetric only: a JWKS in a bundle (served to every node) must never carry a shared secret.
JWT_ALGORITHMS = (
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
    "EdDSA",
)
MAX_LEEWAY_S = 300
MAX_CORS_AGE_S = 86_400
_SHA256 = re.compile(r"[0-9a-f]{64}")
_HEADER = re.compile(r"[a-z0-9!#$%&'*+.^_`|~-]+")
_METHOD = re.compile(r"[A-Z]+")
_ORIGIN = re.compile(r"https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?|https?://\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?")
_URL = re.compile(r"https?://[^\s/?#]+[^\s]*")
_PATH = re.compile(r"/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*")
# Request headers the node sets for a function with [auth]; removed from what clients send.
_IDENTITY_HEADERS = ("x-edge-auth-subject", "x-edge-auth-claims")


class AuthPolicy(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """`[auth]`: every request must carry an API key (`token`) or a JWT (`jwt`), except `public` paths."""

    type: str
    # Where the credential is: `authorization` takes `Bearer <credential>`; any other header the bare value.
    header: str = "authorization"
    # type = "token": the sha256 (hex) of each accepted key (`edge auth hash-key` makes one).
    keys_sha256: list[str] = []
    # type = "jwt": what the token must say and which keys may sign it.
    issuer: str = ""
    audience: str | list[str] = ""
    algorithms: list[str] = msgspec.field(default_factory=lambda: ["RS256"])
    leeway: int = 0
    jwks_file: str = ""
    jwks_url: str = ""
    required_claims: list[str] = []
    # Request paths answered without credentials: an exact path, or everything under one ending in "/".
    public: list[str] = []


class CorsPolicy(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """`[cors]`: which web origins may call the function from a browser; the node answers preflights."""

    origins: list[str]
    methods: list[str] = msgspec.field(default_factory=lambda: ["GET", "HEAD", "POST"])
    headers: list[str] = []
    expose_headers: list[str] = []
    credentials: bool = False
    max_age: int = 600


Fail = Callable[[str, object, str], Exception]


def check_access(auth: AuthPolicy | None, cors: CorsPolicy | None, fail: Fail) -> None:
    """Raise `fail(expected, value, where)` for the first mistake in `[auth]` or `[cors]`."""
    if auth is not None:
        _check_auth(auth, fail)
    if cors is not None:
        _check_cors(cors, fail)


def _check_auth(auth: AuthPolicy, fail: Fail) -> None:
    if auth.type not in AUTH_TYPES:
        raise fail(" or ".join(f'"{kind}"' for kind in AUTH_TYPES), auth.type, "$.auth.type")
    if not _HEADER.fullmatch(auth.header) or auth.header in _IDENTITY_HEADERS:
        raise fail(
            'a lower-case header name such as "authorization" or "x-api-key" (not x-edge-auth-*)',
            auth.header,
            "$.auth.header",
        )
    for index, path in enumerate(auth.public):
        if not _PATH.fullmatch(path):
            raise fail('a request path starting with "/"', path, f"$.auth.public[{index}]")
    jwt_keys = ("issuer", "audience", "jwks_file", "jwks_url", "required_claims")
    if auth.type == "token":
        if not auth.keys_sha256:
            raise fail(
                "a list of at least one sha256 hex digest (`edge auth hash-key` prints one)",
                auth.keys_sha256,
                "$.auth.keys_sha256",
            )
        for index, digest in enumerate(auth.keys_sha256):
            if not _SHA256.fullmatch(digest):
                raise fail(
                    "64 lower-case hex digits: the sha256 of a key, never the key itself"
                    " (`edge auth hash-key` prints it)",
                    digest,
                    f"$.auth.keys_sha256[{index}]",
                )
        for key in jwt_keys:
            if getattr(auth, key):
                raise fail(
                    'nothing for type = "token" (a key of type = "jwt")', getattr(auth, key), f"$.auth.{key}"
                )
        return
    if auth.keys_sha256:
        raise fail(
            'nothing for type = "jwt" (a key of type = "token")', auth.keys_sha256, "$.auth.keys_sha256"
        )
    if not auth.issuer:
        raise fail("the issuer every token must name in `iss`", auth.issuer, "$.auth.issuer")
    audiences = [auth.audience] if isinstance(auth.audience, str) else auth.audience
    if not audiences or not all(audiences):
        raise fail(
            "the audience (or a list of them) tokens must name in `aud`", auth.audience, "$.auth.audience"
        )
    if not auth.algorithms:
        raise fail("at least one algorithm", auth.algorithms, "$.auth.algorithms")
    for index, algorithm in enumerate(auth.algorithms):
        if algorithm not in JWT_ALGORITHMS:
            expected = "an asymmetric algorithm (" + ", ".join(JWT_ALGORITHMS) + ")"
            if algorithm.upper().startswith("HS"):
                expected += "; HS* needs a shared secret in the JWKS, which a bundle must not carry"
            raise fail(expected, algorithm, f"$.auth.algorithms[{index}]")
    if not 0 <= auth.leeway <= MAX_LEEWAY_S:
        raise fail(f"seconds from 0 to {MAX_LEEWAY_S}", auth.leeway, "$.auth.leeway")
    if bool(auth.jwks_file) == bool(auth.jwks_url):
        raise fail(
            "exactly one of `jwks_file` (a JSON file in the bundle) or `jwks_url` (fetched by the origin)",
            {"jwks_file": auth.jwks_file, "jwks_url": auth.jwks_url},
            "$.auth",
        )
    if auth.jwks_file and (auth.jwks_file.startswith("/") or ".." in auth.jwks_file.split("/")):
        raise fail("a path inside the bundle, relative to edge.toml", auth.jwks_file, "$.auth.jwks_file")
    if auth.jwks_url and not _URL.fullmatch(auth.jwks_url):
        raise fail("an http:// or https:// URL", auth.jwks_url, "$.auth.jwks_url")
    for index, claim in enumerate(auth.required_claims):
        if not claim:
            raise fail("a claim name", claim, f"$.auth.required_claims[{index}]")


def _check_cors(cors: CorsPolicy, fail: Fail) -> None:
    if not cors.origins:
        raise fail(
            'at least one origin such as "https://app.example", or ["*"]', cors.origins, "$.cors.origins"
        )
    for index, origin in enumerate(cors.origins):
        if origin == "*":
            if len(cors.origins) > 1:
                raise fail('"*" alone, or a list of origins without "*"', cors.origins, "$.cors.origins")
        elif not _ORIGIN.fullmatch(origin):
            raise fail(
                'an origin "scheme://host[:port]" without a path or trailing slash, or "*"',
                origin,
                f"$.cors.origins[{index}]",
            )
    if cors.credentials and "*" in cors.origins:
        raise fail(
            'the origins listed by name when credentials = true (browsers refuse "*" with credentials)',
            cors.origins,
            "$.cors.origins",
        )
    if not cors.methods:
        raise fail('at least one method such as "GET"', cors.methods, "$.cors.methods")
    for index, method in enumerate(cors.methods):
        if not _METHOD.fullmatch(method):
            raise fail('an upper-case method such as "GET" or "POST"', method, f"$.cors.methods[{index}]")
    for field in ("headers", "expose_headers"):
        for index, name in enumerate(getattr(cors, field)):
            if name == "*" and not cors.credentials:
                continue
            if not _HEADER.fullmatch(name):
                raise fail(
                    'a lower-case header name ("*" only without credentials)',
                    name,
                    f"$.cors.{field}[{index}]",
                )
    if not 0 <= cors.max_age <= MAX_CORS_AGE_S:
        raise fail(f"seconds from 0 to {MAX_CORS_AGE_S}", cors.max_age, "$.cors.max_age")
