"""JSON Web Key Sets for `[auth] type = "jwt"`: checked the same way at upload (origin) and load (node).

A JWKS comes from a file in the bundle (`jwks_file`) or from a URL the origin fetches (`jwks_url`)
and ships in the signed desired state: nodes never fetch keys themselves.
"""

from __future__ import annotations

import urllib.error
import urllib.request

import msgspec
from jwt import PyJWK
from jwt.exceptions import PyJWKError

__all__ = ["MAX_JWKS_BYTES", "JwksError", "fetch_jwks", "parse_jwks"]

MAX_JWKS_BYTES = 256 * 1024


class JwksError(ValueError):
    """A key set that cannot be used; the message names where it came from and what is wrong."""


def parse_jwks(data: bytes | str, source: str) -> dict[str, PyJWK]:
    """The signing keys of a JWKS document by `kid` ("" for a key without one).

    Raises JwksError naming `source` for JSON that is not `{"keys": [...]}`, a key PyJWT cannot
    use, a shared-secret ("oct") key, or two keys with one `kid`.
    """
    try:
        document = msgspec.json.decode(data)
    except msgspec.DecodeError as exc:
        raise JwksError(f"{source}: not JSON: {exc}") from None
    keys = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(keys, list) or not keys:
        raise JwksError(
            f'{source}: Expected a JWKS, {{"keys": [...]}} with at least one key, got {document!r:.80}'
        )
    found: dict[str, PyJWK] = {}
    for index, key in enumerate(keys):
        where = f"{source}: key {index}"
        if not isinstance(key, dict):
            raise JwksError(f"{where}: Expected a JSON object, got {key!r:.80}")
        if key.get("kty") == "oct":
            raise JwksError(
                f'{where}: Expected a public key (kty "RSA", "EC" or "OKP"), got a shared secret'
                ' (kty "oct"): it would reach every node; sign tokens with an asymmetric key'
            )
        if "d" in key:
            raise JwksError(
                f"{where}: Expected a public key, got a private one (it has `d`):"
                " publish only the public half"
            )
        if key.get("use", "sig") != "sig":
            continue  # an encryption key: not for verifying signatures
        kid = key.get("kid", "")
        if not isinstance(kid, str) or kid in found:
            raise JwksError(f"{where}: Expected a unique string `kid`, got {kid!r}")
        try:
            found[kid] = PyJWK(key)
        except (PyJWKError, ValueError, TypeError) as exc:
            raise JwksError(f"{where}: unusable key: {exc}") from None
    if not found:
        raise JwksError(f'{source}: Expected at least one signing key (`use` "sig"), got none')
    return found


def fetch_jwks(url: str, timeout: float = 10.0) -> bytes:
    """GET a JWKS (the origin's job, never a node's); raises JwksError saying what failed."""
    request = urllib.request.Request(url, headers={"accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            data: bytes = response.read(MAX_JWKS_BYTES + 1)
    except urllib.error.HTTPError as exc:
        raise JwksError(f"{url}: the server answered {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        raise JwksError(f"{url}: cannot fetch: {reason}") from None
    if len(data) > MAX_JWKS_BYTES:
        raise JwksError(f"{url}: over {MAX_JWKS_BYTES} bytes; a JWKS is a few keys")
    return data
