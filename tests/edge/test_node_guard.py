"""edge/node/guard.py without a server: token validity by an injected clock, public paths, identity
headers (the HTTP behaviour is in test_node_auth.py)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from jwt_keys import jwks, new_key, token

from edge.node.guard import Admitted, Answer, Guard, build_guard
from isolates.manifest import decode_manifest

KEY = new_key()


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def jwt_guard(tmp_path: Path, clock: Clock, extra: str = "") -> Guard:
    (tmp_path / "jwks.json").write_text(jwks(("k1", KEY)))
    manifest = decode_manifest(
        '[auth]\ntype = "jwt"\nissuer = "https://id.test"\naudience = "api"\njwks_file = "jwks.json"\n'
        'public = ["/f/health", "/f/docs/"]\n' + extra,
        "f/edge.toml",
        "f",
    )
    guard = build_guard(manifest, tmp_path, {})
    assert guard is not None
    guard._clock = clock
    return guard


def check(guard: Guard, credential: str | None = None, path: str = "/f/x") -> Answer | Admitted:
    named = {} if credential is None else {b"authorization": f"Bearer {credential}".encode()}
    return guard.check("GET", path, list(named.items()), named, "req-1")


def refusal(result: Answer | Admitted) -> tuple[int, str]:
    assert isinstance(result, Answer)
    return result.status, json.loads(result.body)["error"]


def test_a_remembered_token_still_expires_by_the_clock(tmp_path: Path) -> None:
    clock = Clock()
    guard = jwt_guard(tmp_path, clock, "leeway = 5\n")
    valid = token(KEY, exp=int(clock.now) + 60)
    assert isinstance(check(guard, valid), Admitted)
    clock.now += 64  # within the leeway
    assert isinstance(check(guard, valid), Admitted)
    clock.now += 2
    assert refusal(check(guard, valid)) == (401, "invalid token: expired")


def test_a_token_not_valid_yet_is_refused_until_its_nbf(tmp_path: Path) -> None:
    clock = Clock()
    guard = jwt_guard(tmp_path, clock)
    early = token(KEY, nbf=int(clock.now) + 30)
    assert refusal(check(guard, early)) == (401, "invalid token: not valid yet (nbf)")
    clock.now += 31
    assert isinstance(check(guard, early), Admitted)
    assert refusal(check(guard, token(KEY, exp="soon"))) == (401, "invalid token: `exp` is not a number")


def test_public_paths_are_exact_or_end_in_a_slash(tmp_path: Path) -> None:
    guard = jwt_guard(tmp_path, Clock())
    for path in ("/f/health", "/f/docs/", "/f/docs/a/b"):
        assert isinstance(check(guard, path=path), Admitted), path
    for path in ("/f/health/x", "/f/healthz", "/f/docs"):
        assert refusal(check(guard, path=path))[0] == 401, path


def test_the_identity_reaches_the_function_escaped_and_forgeries_do_not(tmp_path: Path) -> None:
    guard = jwt_guard(tmp_path, Clock())
    forged = [(b"x-edge-auth-subject", b"admin"), (b"x-edge-auth-claims", b"{}"), (b"accept", b"*/*")]
    credential = (b"authorization", f"Bearer {token(KEY, sub='zoë')}".encode())
    headers = [*forged, credential]
    result = guard.check("GET", "/f/x", headers, dict(headers), "req-1")
    assert isinstance(result, Admitted)
    seen = dict(result.headers)
    assert seen[b"x-edge-auth-subject"] == b"zo\\u00eb"
    assert json.loads(seen[b"x-edge-auth-claims"])["sub"] == "zoë"
    assert [name for name, _ in result.headers].count(b"x-edge-auth-subject") == 1
    public = guard.check("GET", "/f/health", forged, dict(forged), "req-2")
    assert isinstance(public, Admitted) and public.headers == [(b"accept", b"*/*")]


def test_functions_without_auth_or_cors_get_no_guard() -> None:
    assert build_guard(decode_manifest("", "f/edge.toml", "f"), None, {}) is None
