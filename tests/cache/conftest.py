from __future__ import annotations

from collections.abc import Iterator

import pytest
from cache_fakes import Clock, Spawned, make_cache

from cache import HttpCache


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def spawned() -> Iterator[Spawned]:
    coroutines = Spawned()
    yield coroutines
    for coroutine in coroutines:  # a test that did not run them: close, no "never awaited" warning
        coroutine.close()


@pytest.fixture
def cache(clock: Clock, spawned: Spawned) -> HttpCache:
    return make_cache(clock, spawned)
