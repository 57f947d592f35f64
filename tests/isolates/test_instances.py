"""Instance sets through the pool, on real interpreters, with an injected clock: slots, the queue,
growth, reaping, the budget, and the errors a bad [scale] gets (isolates/instances.py)."""

from __future__ import annotations

import asyncio
import textwrap
from pathlib import Path

import pytest
from node_harness import write_function

from edge.node.functions import content_version, isolate_spec, scale_policy
from edge.node.settings import ScaleSettings
from isolates.backends import LoadError
from isolates.instances import GROW_AFTER, Budget, InstanceSet, Refused, ScalePolicy
from isolates.manifest import ManifestError, decode_manifest, load_manifest
from isolates.pool import IsolatePool

SLOW = """\
    import time

    def handler(request):
        time.sleep(float(request.query.get("s", "0")))
        return "ok"
"""

ASYNC = """\
    async def handler(request):
        return "ok"
"""


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def chosen(pool: IsolatePool, name: str) -> InstanceSet:
    function = pool.get(name)
    assert function is not None
    instances = function.choose()
    assert instances is not None
    return instances


async def deploy(pool: IsolatePool, directory: Path, policy: ScalePolicy) -> InstanceSet:
    spec = isolate_spec(directory, load_manifest(directory), content_version(directory))
    await pool.deploy(spec.name, [(spec, 100)], [policy])
    return chosen(pool, spec.name)


def test_reaping_follows_the_injected_clock_down_to_min_instances(tmp_path: Path) -> None:
    directory = write_function(tmp_path, "slow", SLOW)

    async def main() -> None:
        clock = Clock()
        pool = IsolatePool(lambda *line: None, warm_pool=0, clock=clock, reap_interval=0)
        try:
            policy = ScalePolicy(min_instances=2, max_instances=3, idle_timeout=60.0)
            instances = await deploy(pool, directory, policy)
            assert len(instances.instances) == 2
            taken = [instances.take(), instances.take()]
            assert instances.take() is None  # a sync handler: one request per instance
            waiting = asyncio.ensure_future(instances.wait())
            third = await asyncio.wait_for(waiting, 10)  # a third instance started for it
            assert len(instances.instances) == 3 and third.served == 1
            for instance in [*taken, third]:
                assert instance is not None
                instances.give_back(instance)
            clock.now += 59.0
            assert pool.reap() == 0
            clock.now += 1.0
            assert pool.reap() == 1  # down to min_instances, not below
            clock.now += 600.0
            assert (pool.reap(), len(instances.instances), pool.budget.instances) == (0, 2, 2)
        finally:
            await pool.close(5.0)

    asyncio.run(main())


def test_the_budget_retires_the_least_recently_used_idle_instance_of_another_function(tmp_path: Path) -> None:
    for name in ("a", "b", "c"):
        write_function(tmp_path, name, SLOW)

    async def main() -> None:
        clock = Clock()
        budget = Budget(max_instances=2)
        pool = IsolatePool(lambda *line: None, warm_pool=0, clock=clock, budget=budget, reap_interval=0)
        try:
            policy = ScalePolicy(min_instances=1, max_instances=2)
            a = await deploy(pool, tmp_path / "a", policy)
            clock.now += 1
            b = await deploy(pool, tmp_path / "b", policy)
            b.instances[0].last_used = clock.now
            await deploy(pool, tmp_path / "c", policy)  # a's instance, the older, goes
            assert (len(a.instances), len(b.instances), budget.instances, budget.evicted) == (0, 1, 2, 1)
            # b busy, c busy: a request for a finds nothing to retire.
            held = [b.take(), chosen(pool, "c").take()]
            with pytest.raises(Refused) as refused:
                await a.wait()
            assert (refused.value.status, refused.value.retry_after, refused.value.reason) == (
                503,
                5,
                "budget",
            )
            assert pool.refused["budget"] == 1
            assert all(held)
        finally:
            await pool.close(5.0)

    asyncio.run(main())


def test_a_full_queue_refuses_at_once_and_a_queued_request_times_out(tmp_path: Path) -> None:
    directory = write_function(tmp_path, "slow", SLOW)

    async def main() -> None:
        pool = IsolatePool(lambda *line: None, warm_pool=0, reap_interval=0)
        try:
            policy = ScalePolicy(max_instances=1, max_queue=1, queue_timeout=0.05)
            instances = await deploy(pool, directory, policy)
            held = instances.take()
            assert held is not None
            waiting = asyncio.ensure_future(instances.wait())
            await asyncio.sleep(0)
            with pytest.raises(Refused) as full:
                await instances.wait()
            assert (full.value.status, full.value.reason) == (429, "queue_full")
            with pytest.raises(Refused) as timed_out:
                await waiting
            assert (timed_out.value.status, timed_out.value.reason) == (503, "queue_timeout")
            # A freed slot goes to the next waiter, not back to the pool.
            next_one = asyncio.ensure_future(instances.wait())
            await asyncio.sleep(0)
            instances.give_back(held)
            assert await next_one is held
        finally:
            await pool.close(5.0)

    asyncio.run(main())


def test_an_async_handler_takes_many_requests_and_a_sync_one_needs_threadsafe(tmp_path: Path) -> None:
    write_function(tmp_path, "aio", ASYNC)
    write_function(tmp_path, "sync", SLOW)

    async def main() -> None:
        pool = IsolatePool(lambda *line: None, warm_pool=0, reap_interval=0)
        try:
            aio = await deploy(pool, tmp_path / "aio", ScalePolicy(async_concurrency=5))
            assert aio.concurrency == 5
            assert [aio.take() is not None for _ in range(6)] == [True] * 5 + [False]
            with pytest.raises(LoadError) as error:
                await deploy(pool, tmp_path / "sync", ScalePolicy(concurrency=4))
            assert str(error.value) == (
                "[scale] concurrency = 4 needs `threadsafe = true`: the handler is sync and takes one"
                " request at a time unless it is declared thread-safe"
            )
            assert pool.get("sync") is None and pool.budget.instances == 1
            threadsafe = await deploy(pool, tmp_path / "sync", ScalePolicy(concurrency=4, threadsafe=True))
            assert threadsafe.concurrency == 4
        finally:
            await pool.close(5.0)

    asyncio.run(main())


def test_manifest_scale_keys_take_the_nodes_defaults_and_bad_values_are_named() -> None:
    manifest = decode_manifest("[scale]\nmin_instances = 0\nidle_timeout_s = 30\n", "f/edge.toml", "f")
    policy = scale_policy(manifest, ScaleSettings(max_instances=2, queue_timeout_ms=1500))
    assert policy == ScalePolicy(
        min_instances=0, max_instances=2, max_queue=1000, queue_timeout=1.5, idle_timeout=30.0
    )
    # A min_instances above the node's max_instances raises the max for this function.
    raised = scale_policy(
        decode_manifest("[scale]\nmin_instances = 6\n", "f/edge.toml", "f"), ScaleSettings()
    )
    assert (raised.min_instances, raised.max_instances) == (6, 6)
    with pytest.raises(ManifestError) as error:
        decode_manifest("[scale]\nmax_instances = 0\n", "f/edge.toml", "f")
    assert (
        str(error.value) == "f/edge.toml: Expected a number from 1 to 64, got 0 - at `$.scale.max_instances`"
    )
    with pytest.raises(ManifestError) as error:
        decode_manifest("[scale]\nmin_instances = 3\nmax_instances = 2\n", "f/edge.toml", "f")
    assert (
        str(error.value)
        == "f/edge.toml: Expected `int` <= max_instances (2), got 3 - at `$.scale.min_instances`"
    )
    with pytest.raises(ManifestError) as error:
        decode_manifest("[scale]\nqueue_timeout = 5\n", "f/edge.toml", "f")
    assert str(error.value) == "f/edge.toml: Object contains unknown field `queue_timeout` - at `$.scale`"


def test_a_rollout_warms_the_new_version_and_the_old_one_serves_its_queue_then_retires(
    tmp_path: Path,
) -> None:
    directory = write_function(tmp_path, "slow", SLOW)

    async def main() -> None:
        pool = IsolatePool(lambda *line: None, warm_pool=0, reap_interval=0)
        try:
            policy = ScalePolicy(max_instances=1)
            old = await deploy(pool, directory, policy)
            held = old.take()
            assert held is not None
            queued = asyncio.ensure_future(old.wait())
            await asyncio.sleep(0)
            (directory / "main.py").write_text(textwrap.dedent(SLOW).replace('"ok"', '"v2"'))
            new = await deploy(pool, directory, policy)
            assert new is not old and len(new.instances) == 1
            assert pool.budget.instances == 2  # the old instance counts until it retires
            old.give_back(held)
            second = await queued  # served by the old version, which drains
            assert second is held
            old.give_back(second)
            assert (old.instances, pool.budget.instances) == ([], 1)
        finally:
            await pool.close(5.0)

    asyncio.run(main())


def test_a_request_that_waits_only_briefly_starts_no_instance_but_one_that_waits_longer_does(
    tmp_path: Path,
) -> None:
    directory = write_function(tmp_path, "fast", SLOW)

    async def main() -> None:
        pool = IsolatePool(lambda *line: None, warm_pool=0, reap_interval=0)
        try:
            instances = await deploy(pool, directory, ScalePolicy(min_instances=1, max_instances=4))
            held = instances.take()
            assert held is not None
            # Freed before GROW_AFTER: the waiter takes the slot, no instance starts.
            waiting = asyncio.ensure_future(instances.wait())
            await asyncio.sleep(0)
            instances.give_back(held)
            assert await waiting is held
            await asyncio.sleep(GROW_AFTER * 3)
            assert (instances.starting, instances.grown, len(instances.instances)) == (0, 0, 1)
            # Still busy after GROW_AFTER: the set grows for the waiter.
            waiting = asyncio.ensure_future(instances.wait())
            await asyncio.sleep(0)
            assert instances.starting == 0
            second = await waiting
            assert second is not held
            assert (instances.grown, len(instances.instances)) == (1, 2)
        finally:
            await pool.close(5.0)

    asyncio.run(main())
