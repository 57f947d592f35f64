"""What `[auth]` and `[cors]` cost per request in the node's guard (edge/node/guard.py), in-process:

    .venv/bin/python loadtest/guard_cost.py

The best of five timeit repeats per case, in microseconds. "no guard" is what every function
without [auth]/[cors] pays (the app's one dict lookup); "jwt first sight" is PyJWT verifying a
token the guard has not seen (a new token each time), "jwt remembered" the same token again.
"""

from __future__ import annotations

import hashlib
import sys
import tempfile
import timeit
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from jwt_keys import jwks, new_key, token

from edge.node.guard import Guard, build_guard
from isolates.manifest import decode_manifest

KEY = b"k3y-0123456789abcdef"


def guard(text: str, directory: Path | None = None) -> Guard:
    built = build_guard(decode_manifest(text, "edge.toml", "f"), directory, {})
    assert built is not None
    return built


def main() -> None:
    """Print one line per case."""
    digest = hashlib.sha256(KEY).hexdigest()
    keyed = guard(f'[auth]\ntype = "token"\nheader = "x-api-key"\nkeys_sha256 = ["{digest}"]')
    signing = new_key()
    directory = Path(tempfile.mkdtemp())
    (directory / "jwks.json").write_text(jwks(("k1", signing)))
    signed = guard(
        '[auth]\ntype = "jwt"\nissuer = "https://id.test"\naudience = "api"\njwks_file = "jwks.json"',
        directory,
    )
    cors = guard('[cors]\norigins = ["https://a.example"]')
    bearer = b"Bearer " + token(signing).encode()
    fresh = iter([b"Bearer " + token(signing, jti=str(n)).encode() for n in range(300)])
    guards = {"v" * 64: keyed}
    version = "w" * 64
    preflight = {b"origin": b"https://a.example", b"access-control-request-method": b"GET"}
    cases: dict[str, tuple[Callable[[], object], int]] = {
        "no guard": (lambda: guards.get(version), 1_000_000),
        "token, right key": (lambda: keyed.check("GET", "/f", [], {b"x-api-key": KEY}, "r"), 100_000),
        "token, missing (401)": (lambda: keyed.check("GET", "/f", [], {}, "r"), 100_000),
        "jwt first sight": (lambda: signed.check("GET", "/f", [], {b"authorization": next(fresh)}, "r"), 300),
        "jwt remembered": (lambda: signed.check("GET", "/f", [], {b"authorization": bearer}, "r"), 100_000),
        "cors, actual request": (
            lambda: cors.check("GET", "/f", [], {b"origin": b"https://a.example"}, "r"),
            100_000,
        ),
        "cors, preflight": (lambda: cors.check("OPTIONS", "/f", [], preflight, "r"), 100_000),
    }
    for name, (case, number) in cases.items():
        repeats = 5 if number > 300 else 1
        best = min(timeit.repeat(case, number=number, repeat=repeats)) / number
        print(f"{name:22s} {best * 1e6:9.3f} us")


if __name__ == "__main__":
    main()
