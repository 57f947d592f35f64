"""`edge auth hash-key`: the sha256 a manifest's `keys_sha256` takes, from a key read on stdin."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import pytest


def hash_key(stdin: bytes) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge", "auth", "hash-key"],
        input=stdin.decode(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_prints_the_sha256_the_node_compares_with() -> None:
    key = "k3y-0123456789abcdef"
    result = hash_key(f"  {key}\n".encode())
    assert (result.returncode, result.stdout, result.stderr) == (
        0,
        hashlib.sha256(key.encode()).hexdigest() + "\n",
        "",
    )


@pytest.mark.parametrize(
    ("stdin", "error"),
    [
        (
            b"short\n",
            "error: stdin: Expected an API key of at least 16 characters, got 5;"
            " make one with `openssl rand -hex 32`\n",
        ),
        (
            b"two words of a long key\n",
            "error: stdin: Expected an API key of printable ASCII without spaces"
            " (it travels in an HTTP header)\n",
        ),
    ],
)
def test_refuses_keys_that_would_not_do(stdin: bytes, error: str) -> None:
    result = hash_key(stdin)
    assert (result.returncode, result.stdout, result.stderr) == (1, "", error)
