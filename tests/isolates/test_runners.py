"""Interpreter isolates on the node's shared runner threads: idle ones hold no thread, busy ones
still get one, and a parked interpreter serves (and times out) on whichever thread resumes it."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from node_harness import RUNAWAY, write_function
from test_isolate_pool import Harness, harness, run

from edge.node.functions import isolate_spec
from isolates.backends._runners import Runners, default_floor
from isolates.manifest import load_manifest

ASYNC = """
    import asyncio

    async def handler(request):
        await asyncio.sleep(0.01)
        return "slept"
"""

BLOCKING = """
    import time

    def handler(request):
        if request.query_string == "block":
            time.sleep(3.0)
        return "ok"
"""


def threads() -> int:
    """OS threads of this process (the runner threads and the watchdogs inside interpreters)."""
    return len(os.listdir("/proc/self/task"))


async def until(condition: Callable[[], bool], limit: float = 10.0) -> None:
    """Poll `condition` every 10 ms; fail after `limit` seconds."""
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def parked(h: Harness, name: str) -> Callable[[], bool]:
    function = h.pool.get(name)
    assert function is not None
    isolate: Any = function.pick()
    return lambda: not isolate._scheduled


def test_threads_stay_bounded_with_300_functions_deployed(tmp_path: Path) -> None:
    names = [f"fn{index:03d}" for index in range(300)]
    for name in names:
        write_function(tmp_path, name, f"def handler(request):\n    return {name!r}\n")

    async def body() -> None:
        before = threads()
        async with harness(tmp_path) as h:
            # All at once, as a node starts: creating interpreters takes one thread per core.
            specs = [isolate_spec(tmp_path / name, load_manifest(tmp_path / name), name) for name in names]
            await asyncio.gather(*(h.pool.deploy(spec.name, [(spec, 100)]) for spec in specs))
            runners = h.pool._backends["interpreter"].runners  # type: ignore[attr-defined]
            assert runners.started <= default_floor()
            for name in names:
                assert (await h.call(name))[4] == name.encode()
            # Once the last activations park, only the runner threads are left: one per core.
            await until(lambda: threads() - before <= default_floor())
            assert runners.started <= default_floor()

    run(body())


def test_handlers_blocked_in_every_runner_do_not_hold_up_another_function(tmp_path: Path) -> None:
    blockers = [f"block{index}" for index in range(default_floor() + 2)]
    for name in blockers:
        write_function(tmp_path, name, BLOCKING)
    write_function(tmp_path, "quick", "def handler(request):\n    return 'quick'\n")

    async def body() -> None:
        async with harness(tmp_path, *blockers, "quick") as h:
            blocked = [asyncio.ensure_future(h.call(name, query="block")) for name in blockers]
            await asyncio.sleep(0.1)  # every blocker is inside time.sleep now
            started = time.monotonic()
            assert (await h.call("quick"))[4] == b"quick"
            assert time.monotonic() - started < 2.0  # not after the blockers (3 s)
            assert [reply[4] for reply in await asyncio.gather(*blocked)] == [b"ok"] * len(blockers)

    run(body())


def test_a_parked_async_function_serves_again(tmp_path: Path) -> None:
    write_function(tmp_path, "napper", ASYNC)

    async def body() -> None:
        async with harness(tmp_path, "napper") as h:
            for _ in range(3):
                assert (await h.call("napper"))[4] == b"slept"
                await until(parked(h, "napper"))
            # Requests in one batch, each waiting on a timer, on one activation.
            replies = await asyncio.gather(*(h.call("napper") for _ in range(20)))
            assert {reply[4] for reply in replies} == {b"slept"}

    run(body())


def test_a_deadline_interrupts_a_handler_after_the_isolate_moved_threads(tmp_path: Path) -> None:
    write_function(tmp_path, "runaway", RUNAWAY, "timeout_ms = 200\n")

    async def body() -> None:
        async with harness(tmp_path, "runaway") as h:
            for calls in (1, 3):
                reply = await h.call("runaway")
                assert reply[2:] == (200, ((b"content-type", b"application/json"),), b'{"calls":%d}' % calls)
                await until(parked(h, "runaway"))
                started = time.monotonic()
                reply = await h.call("runaway", query="forever")
                assert reply[2:] == (504, "function runaway timed out after 200 ms")
                assert time.monotonic() - started < 1.0
                # The guest's watchdog stopped the loop (the host answered at the deadline): the
                # interpreter parks again, which one spinning in the loop never would.
                await until(parked(h, "runaway"))
            assert h.pool.abandoned == 0

    run(body())


class Fake:
    """An activation that runs until released; idle (evictable) or starting as told."""

    def __init__(self, idle: bool = False, starting: bool = False, pending: int = 1) -> None:
        self.idle = idle
        self.starting = starting
        # Requests in hand: an idle one, or one that answered everything, has none.
        self.pending = 0 if idle else pending
        self.entered = threading.Event()
        self.release = threading.Event()
        self.evicted = 0

    def run_activation(self) -> None:
        self.entered.set()
        assert self.release.wait(10.0)

    def evict(self) -> bool:
        if not self.idle:
            return False
        self.evicted += 1
        self.release.set()
        return True


def submit(runners: Runners, activation: Fake) -> None:
    with runners.lock:
        runners.submit(activation)


def test_runners_evict_an_idle_interpreter_before_starting_a_thread_past_the_floor() -> None:
    runners = Runners(floor=1, limit=8)
    idle, waiting = Fake(idle=True), Fake()
    submit(runners, idle)
    assert idle.entered.wait(5.0)
    submit(runners, waiting)
    assert waiting.entered.wait(5.0)
    assert (idle.evicted, runners.started) == (1, 1)
    waiting.release.set()
    runners.close()


def test_runners_start_a_thread_when_every_one_is_busy_but_not_while_one_is_starting() -> None:
    runners = Runners(floor=1, limit=8)
    starting, busy, third = Fake(starting=True), Fake(), Fake()
    submit(runners, starting)
    assert starting.entered.wait(5.0)
    submit(runners, busy)  # waits for the starting one (CPU-bound, done soon)
    assert runners.started == 1
    assert runners.pressure[0] == 1
    starting.release.set()
    assert busy.entered.wait(5.0)
    submit(runners, third)  # the only thread is busy in a handler: a second one
    assert third.entered.wait(5.0)
    assert runners.started == 2
    assert runners.pressure[0] == 0
    busy.release.set()
    third.release.set()
    runners.close()


def test_runners_wait_for_an_interpreter_that_answered_everything_rather_than_start_a_thread() -> None:
    # It lingers or parks next: a new thread for the second activation would outlive the need.
    runners = Runners(floor=1, limit=8)
    answered, waiting = Fake(pending=0), Fake()
    submit(runners, answered)
    assert answered.entered.wait(5.0)
    submit(runners, waiting)
    assert runners.started == 1
    answered.release.set()
    assert waiting.entered.wait(5.0)
    waiting.release.set()
    runners.close()
