"""The fixtures for tests of origins that share PostgreSQL and S3 (servers: loadtest/_backends.py).

A test module imports the fixtures it uses, so each module that needs them starts one cluster
and one S3 server, and each test gets its own database and bucket.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from loadtest._backends import S3_ENV, Postgres, S3Server, postgres, s3_server

__all__ = ["S3_ENV", "Postgres", "S3Server", "pg_cluster", "s3"]


@pytest.fixture(scope="module")
def pg_cluster() -> Iterator[Postgres]:
    """A PostgreSQL cluster for the module; `pg_cluster.create()` gives each test its own database."""
    with postgres() as running:
        yield running


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """moto's S3 server for the module; `s3.bucket()` gives each test its own bucket."""
    with s3_server(tmp_path_factory.mktemp("s3") / "moto.log") as running:
        yield running
