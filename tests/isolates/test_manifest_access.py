"""`[auth]` and `[cors]` in edge.toml: what decodes, and mistakes refused with the key, value and fix."""

from __future__ import annotations

import pytest

from isolates.access import AuthPolicy, CorsPolicy
from isolates.manifest import ManifestError, decode_manifest

HASH = "a" * 64


def test_token_jwt_and_cors_tables_decode() -> None:
    token = decode_manifest(
        f'[auth]\ntype = "token"\nkeys_sha256 = ["{HASH}"]\npublic = ["/x/health"]', "e", "x"
    )
    assert token.auth == AuthPolicy(type="token", keys_sha256=[HASH], public=["/x/health"])
    jwt = decode_manifest(
        '[auth]\ntype = "jwt"\nissuer = "https://id.example"\naudience = ["a", "b"]\n'
        'algorithms = ["ES256"]\nleeway = 30\njwks_file = "keys/jwks.json"\nrequired_claims = ["scope"]\n'
        '[cors]\norigins = ["https://a.example", "http://localhost:3000"]\ncredentials = true\nmax_age = 60',
        "e",
        "x",
    )
    assert jwt.auth is not None and (jwt.auth.audience, jwt.auth.algorithms) == (["a", "b"], ["ES256"])
    assert jwt.cors == CorsPolicy(
        origins=["https://a.example", "http://localhost:3000"], credentials=True, max_age=60
    )
    assert jwt.cors.methods == ["GET", "HEAD", "POST"]
    assert decode_manifest("", "e", "x").auth is None


JWT = '[auth]\ntype = "jwt"\nissuer = "https://id.example"\naudience = "api"\njwks_file = "jwks.json"\n'


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '[auth]\ntype = "basic"',
            """f/edge.toml: Expected "token" or "jwt", got 'basic' - at `$.auth.type`""",
        ),
        (
            "[auth]\nkeys_sha256 = []",
            "f/edge.toml: Object missing required field `type` - at `$.auth`",
        ),
        (
            '[auth]\ntype = "token"',
            "f/edge.toml: Expected a list of at least one sha256 hex digest (`edge auth hash-key` prints"
            " one), got [] - at `$.auth.keys_sha256`",
        ),
        (
            '[auth]\ntype = "token"\nkeys_sha256 = ["my-secret-key"]',
            "f/edge.toml: Expected 64 lower-case hex digits: the sha256 of a key, never the key itself"
            " (`edge auth hash-key` prints it), got 'my-secret-key' - at `$.auth.keys_sha256[0]`",
        ),
        (
            f'[auth]\ntype = "token"\nkeys_sha256 = ["{HASH}"]\nheader = "X-Api-Key"',
            'f/edge.toml: Expected a lower-case header name such as "authorization" or "x-api-key"'
            " (not x-edge-auth-*), got 'X-Api-Key' - at `$.auth.header`",
        ),
        (
            f'[auth]\ntype = "token"\nkeys_sha256 = ["{HASH}"]\nissuer = "x"',
            """f/edge.toml: Expected nothing for type = "token" (a key of type = "jwt"), got 'x'"""
            " - at `$.auth.issuer`",
        ),
        (
            JWT + 'algorithms = ["HS256"]',
            "f/edge.toml: Expected an asymmetric algorithm (RS256, RS384, RS512, PS256, PS384, PS512,"
            " ES256, ES384, ES512, EdDSA); HS* needs a shared secret in the JWKS, which a bundle must"
            " not carry, got 'HS256' - at `$.auth.algorithms[0]`",
        ),
        (
            JWT + 'algorithms = ["none"]',
            "f/edge.toml: Expected an asymmetric algorithm (RS256, RS384, RS512, PS256, PS384, PS512,"
            " ES256, ES384, ES512, EdDSA), got 'none' - at `$.auth.algorithms[0]`",
        ),
        (
            JWT.replace('audience = "api"\n', ""),
            "f/edge.toml: Expected the audience (or a list of them) tokens must name in `aud`, got ''"
            " - at `$.auth.audience`",
        ),
        (
            JWT + 'jwks_url = "https://id.example/jwks"',
            "f/edge.toml: Expected exactly one of `jwks_file` (a JSON file in the bundle) or `jwks_url`"
            " (fetched by the origin), got {'jwks_file': 'jwks.json', 'jwks_url': 'https://id.example/jwks'}"
            " - at `$.auth`",
        ),
        (
            JWT.replace('"jwks.json"', '"../jwks.json"'),
            "f/edge.toml: Expected a path inside the bundle, relative to edge.toml, got '../jwks.json'"
            " - at `$.auth.jwks_file`",
        ),
        (
            JWT + "leeway = 3600",
            "f/edge.toml: Expected seconds from 0 to 300, got 3600 - at `$.auth.leeway`",
        ),
        (
            '[cors]\norigins = ["*"]\ncredentials = true',
            "f/edge.toml: Expected the origins listed by name when credentials = true (browsers refuse"
            " \"*\" with credentials), got ['*'] - at `$.cors.origins`",
        ),
        (
            '[cors]\norigins = ["https://a.example/"]',
            'f/edge.toml: Expected an origin "scheme://host[:port]" without a path or trailing slash,'
            " or \"*\", got 'https://a.example/' - at `$.cors.origins[0]`",
        ),
        (
            '[cors]\norigins = ["https://a.example"]\nmethods = ["get"]',
            'f/edge.toml: Expected an upper-case method such as "GET" or "POST", got \'get\''
            " - at `$.cors.methods[0]`",
        ),
        (
            "[cors]\nmax_age = 5",
            "f/edge.toml: Object missing required field `origins` - at `$.cors`",
        ),
    ],
)
def test_mistakes_name_the_key_the_value_and_the_fix(text: str, message: str) -> None:
    with pytest.raises(ManifestError) as caught:
        decode_manifest(text, "f/edge.toml", "f")
    assert str(caught.value) == message
