"""One origin process shared by the origin tests (small limits, 1 s heartbeats)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from origin_harness import Origin, running_origin

SMALL_LIMITS = ("--max-bundle-bytes", "200000", "--max-unpacked-bytes", "1000000")


@pytest.fixture(scope="session")
def origin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Origin]:
    """The shared origin: heartbeat 1 s, so a node is not live 3 s after its last report."""
    data = tmp_path_factory.mktemp("shared-origin") / "data"
    with running_origin(data, "--heartbeat-interval", "1", *SMALL_LIMITS) as running:
        yield running
