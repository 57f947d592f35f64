"""The interpreter backend's warm pool keeps a blank interpreter ready for each function that has
never run (up to warm_pool_max), within the node's budget, and gives blanks back to instances that
need the room (isolates/backends/subinterpreter.py `WarmPool`, isolates/instances.py `Budget`), on
real interpreters."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

from node_harness import write_function

from edge.node.functions import content_version, isolate_spec
from isolates.backends import IsolateSpec
from isolates.instances import Budget, ScalePolicy
from isolates.manifest import load_manifest
from isolates.pool import IsolatePool

HELLO = "def handler(request):\n    return 'hi'\n"


async def until(condition: Callable[[], bool], limit: float = 20.0) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def spec_of(root: Path, name: str) -> IsolateSpec:
    directory = root / name
    return isolate_spec(directory, load_manifest(directory), content_version(directory))


def test_a_blank_is_made_ahead_for_each_never_run_function_up_to_warm_pool_max(tmp_path: Path) -> None:
    names = [f"f{index:02d}" for index in range(12)]
    for name in names:
        write_function(tmp_path, name, HELLO)

    async def main() -> None:
        pool = IsolatePool(lambda *line: None, warm_pool=1, warm_pool_max=8, reap_interval=0.05)
        warm = pool.warm_pool
        assert warm is not None
        try:
            assert warm.target == 1
            for name in names:  # preload = false: routed, started on the first request
                pool.register_lazy(spec_of(tmp_path, name), ScalePolicy(min_instances=0, idle_timeout=0.2))
            await until(lambda: warm.target == 8 and len(warm._standby) == 8)
            await until(lambda: all(isolate.made for isolate in warm._standby))
            # Cold starts now find blanks made ahead of them.
            for name in names[:8]:
                function = pool.get(name)
                assert function is not None
                instance = await function.releases[0].instances.wait()
                function.releases[0].instances.give_back(instance)
            assert warm.outrun == 0
            # Four never-run functions left: the pool keeps up to 8 blanks for them, no more.
            await until(lambda: warm.target == 4)
            # Functions that ran and scaled to zero get no blank: their interpreters are freed.
            await until(lambda: pool.budget.instances == 0, limit=10.0)
            warm.refill()
            assert warm.target == 4
        finally:
            await pool.close(5.0)

    asyncio.run(main())


def test_warm_pool_0_keeps_no_blank_even_with_never_run_functions(tmp_path: Path) -> None:
    write_function(tmp_path, "lazy", HELLO)

    async def main() -> None:
        pool = IsolatePool(lambda *line: None, warm_pool=0, warm_pool_max=8, reap_interval=0)
        warm = pool.warm_pool
        assert warm is not None
        try:
            pool.register_lazy(spec_of(tmp_path, "lazy"))
            await asyncio.sleep(0.05)
            warm.refill()
            assert (warm.target, len(warm._standby)) == (0, 0)
        finally:
            await pool.close(5.0)

    asyncio.run(main())


def test_blanks_past_warm_pool_count_against_the_budget_and_give_way_to_instances(tmp_path: Path) -> None:
    names = [f"f{index}" for index in range(10)]
    for name in names:
        write_function(tmp_path, name, HELLO)

    async def main() -> None:
        budget = Budget(max_instances=6)
        pool = IsolatePool(lambda *line: None, warm_pool=1, warm_pool_max=16, budget=budget, reap_interval=0)
        warm = pool.warm_pool
        assert warm is not None
        try:
            await asyncio.gather(*(pool.deploy(name, [(spec_of(tmp_path, name), 100)]) for name in names[:3]))
            for name in names[3:]:
                pool.register_lazy(spec_of(tmp_path, name))
            # Seven never-run functions want 7 blanks; the budget has room for 3 beyond the base one.
            await until(lambda: len(warm._standby) == 4)
            await asyncio.sleep(0.1)
            assert (budget.instances, warm.target, warm.extra_standby()) == (3, 7, 3)
            assert not budget.room_for_blank()
            # Three more instances: each takes a blank, and refilling never passes the budget.
            for name in names[3:6]:
                function = pool.get(name)
                assert function is not None
                instance = await function.releases[0].instances.wait()
                function.releases[0].instances.give_back(instance)
                assert budget.instances + warm.extra_standby() <= 6
            assert budget.instances == 6
            assert budget.evicted == 0  # the blanks gave way: no instance was retired
        finally:
            await pool.close(5.0)

    asyncio.run(main())
