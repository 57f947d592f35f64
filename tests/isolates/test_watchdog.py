"""The in-isolate watchdog, driven directly: it interrupts on time and costs no thread wake per request.

The guest runtime is standard library only, so it imports in the main interpreter too; the
watchdog interrupts the thread that created it, which here is the test's own thread.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from isolates.guest import GUEST_DIR


@pytest.fixture
def runtime() -> Iterator[Any]:
    # Inside an isolate `edgefn` is the guest package; here it may already be the top-level
    # re-export (edgefn/), which has none of the guest's private modules: swap it meanwhile.
    saved = {name: sys.modules.pop(name) for name in list(sys.modules) if name.partition(".")[0] == "edgefn"}
    sys.path.insert(0, str(GUEST_DIR))
    try:
        import _edge_runtime

        yield _edge_runtime
    finally:
        sys.path.remove(str(GUEST_DIR))
        for name in [name for name in sys.modules if name.partition(".")[0] in ("edgefn", "_edge_runtime")]:
            del sys.modules[name]
        sys.modules.update(saved)


def _spin(started: float, limit: float) -> None:
    while time.monotonic() - started < limit:
        pass


def _spin_until_interrupted(runtime: Any, token: int, watchdog: Any, limit: float) -> float:
    """Seconds a Python loop ran before the watchdog stopped it (fails at `limit`).

    The loop runs in a frame of its own, as a handler's does: CPython 3.13.0 does not catch an
    interrupt raised at a loop's backward jump in the frame holding the `try`.
    """
    started = time.monotonic()
    try:
        _spin(started, limit)
    except runtime.HandlerTimeout:
        return time.monotonic() - started
    finally:
        watchdog.disarm(token)
    pytest.fail(f"the watchdog did not interrupt a loop within {limit} s")


def test_requests_under_the_deadline_wake_the_watchdog_at_most_twice(runtime: Any) -> None:
    # The serve loop gives up its GIL between requests (it sleeps on the eventfd); time.sleep(0)
    # does the same here. A watchdog woken per request costs a thread switch each time.
    watchdog = runtime._Watchdog(threading.get_ident())
    try:
        for _ in range(2000):
            time.sleep(0)
            token = watchdog.arm(time.monotonic() + 30)
            time.sleep(0)
            watchdog.disarm(token)
        assert watchdog.wakeups <= 2
    finally:
        watchdog.stop()


def test_a_loop_past_its_deadline_is_interrupted(runtime: Any) -> None:
    watchdog = runtime._Watchdog(threading.get_ident())
    try:
        for _ in range(3):  # and again after one fired: nothing stays pending
            token = watchdog.arm(time.monotonic() + 0.05)
            ran = _spin_until_interrupted(runtime, token, watchdog, limit=5.0)
            assert 0.04 <= ran < 2.0
    finally:
        watchdog.stop()


def test_an_earlier_deadline_after_a_later_one_still_fires_on_time(runtime: Any) -> None:
    watchdog = runtime._Watchdog(threading.get_ident())
    try:
        later = watchdog.arm(time.monotonic() + 30)
        time.sleep(0.05)  # the watchdog now sleeps until the later deadline
        token = watchdog.arm(time.monotonic() + 0.05)
        ran = _spin_until_interrupted(runtime, token, watchdog, limit=5.0)
        assert ran < 2.0
        watchdog.disarm(later)
    finally:
        watchdog.stop()


def test_after_an_idle_spell_the_next_deadline_is_kept(runtime: Any) -> None:
    watchdog = runtime._Watchdog(threading.get_ident())
    try:
        watchdog.disarm(watchdog.arm(time.monotonic() + 0.02))
        time.sleep(0.2)  # past the latest deadline: the watchdog sleeps until notified
        token = watchdog.arm(time.monotonic() + 0.05)
        ran = _spin_until_interrupted(runtime, token, watchdog, limit=5.0)
        assert ran < 2.0
    finally:
        watchdog.stop()
