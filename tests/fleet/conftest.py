"""The `fleet` fixture: a real origin and real nodes on loopback, stopped on teardown."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fleet_harness import Fleet


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    """Start processes with `fleet.start_origin()` and `fleet.start_node()`; all stop at the end."""
    running = Fleet(tmp_path)
    try:
        yield running
    finally:
        running.close()
