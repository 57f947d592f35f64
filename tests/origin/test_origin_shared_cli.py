"""`edge origin --database/--blobs/--blobs-endpoint`: bad values are refused before anything starts."""

from __future__ import annotations

from pathlib import Path

import pytest
from origin_harness import free_port, run_edge


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ("--database", "mysql://db/edge"),
            "--database: Expected postgresql://[user@]host[:port]/dbname (or nothing, for SQLite in the"
            " data directory), got 'mysql://db/edge'",
        ),
        (
            ("--database", "postgresql://edge:hunter2@db/edge"),
            "--database: Expected a URL without a password (an argument is visible to every user of this"
            " machine), got one for postgresql://edge:***@db/edge; put the password in a PostgreSQL"
            " password file (~/.pgpass, or the file PGPASSFILE names) instead",
        ),
        (
            ("--blobs", "/srv/blobs"),
            "--blobs: Expected s3://bucket[/prefix] (or nothing, for the data directory), got '/srv/blobs'",
        ),
        (
            ("--blobs-endpoint", "http://127.0.0.1:9000"),
            "--blobs-endpoint http://127.0.0.1:9000: only an S3 bucket (--blobs s3://...) uses it",
        ),
        (
            ("--blobs", "s3://bundles", "--blobs-endpoint", "127.0.0.1:9000"),
            "--blobs-endpoint: Expected http://host:port or https://host, got '127.0.0.1:9000'",
        ),
        (
            ("--blobs", "s3://bundles/edge", "--no-credentials"),
            "--blobs s3://bundles/edge: Expected the bucket's credentials in the environment, got no"
            " AWS_ACCESS_KEY_ID and no AWS_SECRET_ACCESS_KEY; set AWS_ACCESS_KEY_ID and"
            " AWS_SECRET_ACCESS_KEY for the origin",
        ),
    ],
)
def test_bad_shared_storage_is_refused(args: tuple[str, ...], message: str, tmp_path: Path) -> None:
    data = tmp_path / "data"
    given = "--no-credentials" not in args
    env = {"AWS_ACCESS_KEY_ID": "k" if given else "", "AWS_SECRET_ACCESS_KEY": "s" if given else ""}
    args = tuple(arg for arg in args if arg != "--no-credentials")
    result = run_edge("origin", "--port", str(free_port()), "--data", str(data), *args, env=env)
    assert (result.returncode, result.stdout, result.stderr) == (2, "", f"error: {message}\n")
    assert not data.exists()  # refused before the data directory was made
