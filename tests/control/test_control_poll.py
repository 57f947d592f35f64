"""The node's poll loop state machine and backoff, without sockets or sleeping."""

from __future__ import annotations

import random

import pytest

from edge.control.poll import Poller, backoff


def test_backoff_grows_exponentially_with_jitter_and_a_cap() -> None:
    rng = random.Random(1)
    for attempt, ceiling in [(1, 0.5), (2, 1.0), (3, 2.0), (6, 16.0), (7, 30.0), (100, 30.0), (10_000, 30.0)]:
        delays = [backoff(attempt, rng) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 1


def test_backoff_refuses_attempt_zero() -> None:
    with pytest.raises(ValueError, match=r"^attempt: Expected `int` >= 1, got 0$"):
        backoff(0, random.Random(0))


def test_poller() -> None:
    poller = Poller(rng=random.Random(2), cap=8.0)
    assert poller.on_state(5) == 0.0
    assert poller.revision == 5
    assert poller.on_unchanged() == 0.0
    delays = [poller.on_failure() for _ in range(6)]
    assert poller.failures == 6
    assert 0.25 <= delays[0] <= 0.5 and 0.5 <= delays[1] <= 1.0
    assert all(4.0 <= d <= 8.0 for d in delays[4:])
    assert poller.on_state(3) == 0.0  # an older revision never moves the node back
    assert (poller.revision, poller.failures) == (5, 0)
    assert 0.25 <= poller.on_failure() <= 0.5


def test_an_unreachable_origin_is_retried_within_the_reconnect_cap() -> None:
    poller = Poller(rng=random.Random(3), cap=30.0, reconnect_cap=1.0)
    delays = [poller.on_unreachable() for _ in range(50)]
    assert 0.25 <= delays[0] <= 0.5
    assert all(0.5 <= d <= 1.0 for d in delays[1:])  # never the 30 s an erring origin gets
    assert len(set(delays)) > 10  # jittered: a fleet that lost the origin together spreads out
    assert poller.failures == 50
    # The first bad answer after a long outage backs off as a first one, not as the 51st.
    assert 0.25 <= poller.on_failure() <= 0.5
    assert [0.5 <= poller.on_failure() <= 1.0, 1.0 <= poller.on_failure() <= 2.0] == [True, True]
    assert (poller.failures, poller.refusals) == (53, 3)
    assert 0.5 <= poller.on_unreachable() <= 1.0  # an unreachable origin: never past reconnect_cap
    assert poller.on_unchanged() == 0.0 and (poller.failures, poller.refusals) == (0, 0)
