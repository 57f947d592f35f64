"""Test helpers for `[auth] type = "jwt"`: RSA keys, JWKS documents and tokens signed (or not) by them."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

ISSUER = "https://id.test"


def new_key() -> rsa.RSAPrivateKey:
    """A fresh 2048-bit RSA key (PyJWT warns about shorter ones)."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def jwks(*keys: tuple[str, rsa.RSAPrivateKey]) -> str:
    """A JWKS document with the public halves of `keys` ((kid, private key) pairs)."""
    found = []
    for kid, key in keys:
        jwk = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
        found.append({**jwk, "kid": kid, "use": "sig", "alg": "RS256"})
    return json.dumps({"keys": found})


def token(key: rsa.RSAPrivateKey, kid: str = "k1", **claims: Any) -> str:
    """A JWT from ISSUER for audience "api", subject "user-7", valid for 10 minutes, unless `claims`
    change it (None removes a claim)."""
    now = int(time.time())
    payload = {"iss": ISSUER, "aud": "api", "sub": "user-7", "exp": now + 600, "iat": now, **claims}
    payload = {name: value for name, value in payload.items() if value is not None}
    return jwt.encode(payload, key, algorithm="RS256", headers={"kid": kid})


def unsigned(**claims: Any) -> str:
    """An `alg: none` token (no signature at all)."""

    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    payload = {"iss": ISSUER, "aud": "api", "sub": "user-7", "exp": int(time.time()) + 600, **claims}
    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(payload)}."
