"""Functions in real subinterpreters through the pool: the contract, isolation, errors, timeouts."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Coroutine
from pathlib import Path
from typing import Any

import pytest
from node_harness import BOOM, CONTRACT, RUNAWAY, STUCK_IN_C, write_function

from edge.node.functions import content_version, isolate_spec
from isolates.backends import ERROR, RESPONSE, IsolateSpec, LoadError
from isolates.manifest import load_manifest
from isolates.pool import IsolatePool


class Harness:
    """A pool in a running loop, the log lines it produced, and a way to call functions."""

    def __init__(self, pool: IsolatePool, lines: list[tuple[str, ...]]) -> None:
        self.pool = pool
        self.lines = lines
        self.count = 0

    async def call(
        self,
        name: str,
        path: str = "/",
        query: str = "",
        method: str = "GET",
        body: bytes = b"",
        headers: tuple[tuple[bytes, bytes], ...] = (),
    ) -> tuple[Any, ...]:
        function = self.pool.get(name)
        assert function is not None
        isolate = function.pick()
        assert isolate is not None
        self.count += 1
        request_id = f"req-{self.count}"
        return await isolate.submit(
            method, path, query, headers, body, request_id, time.monotonic() + function.timeout
        )


@contextlib.asynccontextmanager
async def harness(root: Path, *names: str, **options: Any) -> AsyncIterator[Harness]:
    lines: list[tuple[str, ...]] = []
    pool = IsolatePool(lambda *line: lines.append(line), warm_pool=0, **options)
    try:
        for name in names:
            directory = root / name
            spec = isolate_spec(directory, load_manifest(directory), content_version(directory))
            await pool.deploy(spec.name, [(spec, 100)])
        yield Harness(pool, lines)
    finally:
        await pool.close(5.0)


def run(coroutine: Coroutine[Any, Any, None]) -> None:
    asyncio.run(coroutine)


TEXT = (b"content-type", b"text/plain; charset=utf-8")
JSON = (b"content-type", b"application/json")


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("str", (RESPONSE, 200, (TEXT,), b"hi")),
        ("bytes", (RESPONSE, 200, ((b"content-type", b"application/octet-stream"),), b"\x00\x01")),
        ("dict", (RESPONSE, 200, (JSON,), b'{"a":1}')),
        ("list", (RESPONSE, 200, (JSON,), b'[1,"two"]')),
        ("tuple2", (RESPONSE, 201, (TEXT,), b"created")),
        ("tuple3", (RESPONSE, 418, (TEXT, (b"x-extra", b"1")), b"teapot")),
        ("response", (RESPONSE, 202, ((b"content-type", b"text/csv"),), b"a,b")),
        ("none", (RESPONSE, 200, (), b"")),
        (
            "bad",
            (
                ERROR,
                500,
                "TypeError: handler returned int; expected str, bytes, dict, list, "
                "a (body, status[, headers]) tuple or a Response",
            ),
        ),
        (
            "badstatus",
            (ERROR, 500, "TypeError: handler returned status 1000; expected an int from 100 to 599"),
        ),
    ],
)
def test_return_types(tmp_path: Path, kind: str, expected: tuple[Any, ...]) -> None:
    write_function(tmp_path, "contract", CONTRACT)

    async def body() -> None:
        async with harness(tmp_path, "contract") as h:
            reply = await h.call("contract", query=kind)
            assert (reply[0], *reply[2:]) == expected

    run(body())


def test_request_object_and_context(tmp_path: Path) -> None:
    write_function(
        tmp_path,
        "req",
        """
        def handler(request):
            ctx = request.context
            return {
                "method": request.method, "path": request.path, "query": request.query,
                "raw": request.query_string, "ua": request.headers["USER-AGENT"],
                "has": "x-missing" in request.headers, "all": request.headers.getall("x-many"),
                "text": request.text(), "json": request.json(),
                "ctx": [ctx.function, ctx.request_id, len(ctx.version), 0 < ctx.remaining_ms <= 30000],
            }
        """,
    )

    async def body() -> None:
        async with harness(tmp_path, "req") as h:
            headers = ((b"user-agent", b"t/1"), (b"x-many", b"1"), (b"x-many", b"2"))
            reply = await h.call("req", "/req/a", "a=1&a=2&b=", "POST", b'{"k": [1]}', headers)
            assert reply[0] == RESPONSE, reply
            import json

            assert json.loads(reply[4]) == {
                "method": "POST",
                "path": "/req/a",
                "query": {"a": ["1", "2"], "b": [""]},
                "raw": "a=1&a=2&b=",
                "ua": "t/1",
                "has": False,
                "all": ["1", "2"],
                "text": '{"k": [1]}',
                "json": {"k": [1]},
                "ctx": ["req", "req-1", 64, True],
            }

    run(body())


def test_module_state_persists_and_same_named_modules_are_separate(tmp_path: Path) -> None:
    for name in ("one", "two"):
        write_function(
            tmp_path,
            name,
            """
            import util

            def handler(request):
                util.calls += 1
                return {"who": util.WHO, "calls": util.calls}
            """,
            files={"util.py": f"WHO = {name!r}\ncalls = 0\n"},
        )

    async def body() -> None:
        async with harness(tmp_path, "one", "two") as h:
            assert (await h.call("one"))[4] == b'{"who":"one","calls":1}'
            assert (await h.call("one"))[4] == b'{"who":"one","calls":2}'
            assert (await h.call("two"))[4] == b'{"who":"two","calls":1}'

    run(body())


def test_environment_is_the_manifest_env_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGE_TOKEN", "host-secret")
    code = """
        import os

        def handler(request):
            before = dict(os.environ)
            os.environ["WRITTEN_BY_" + request.context.function.upper()] = "x"
            return {"before": before, "getenv": os.getenv("EDGE_TOKEN")}
    """
    write_function(tmp_path, "a", code, '[env]\nGREETING = "hi"\n')
    write_function(tmp_path, "b", code)

    async def body() -> None:
        async with harness(tmp_path, "a", "b") as h:
            assert (await h.call("a"))[4] == b'{"before":{"GREETING":"hi"},"getenv":null}'
            assert (await h.call("b"))[4] == b'{"before":{},"getenv":null}'
            again = await h.call("a")
            assert again[4] == b'{"before":{"GREETING":"hi","WRITTEN_BY_A":"x"},"getenv":null}'

    run(body())
    assert "WRITTEN_BY_A" not in os.environ
    assert os.environ["EDGE_TOKEN"] == "host-secret"


def test_exception_is_500_and_the_isolate_keeps_serving(tmp_path: Path) -> None:
    write_function(
        tmp_path,
        "boom",
        BOOM,
    )

    async def body() -> None:
        async with harness(tmp_path, "boom") as h:
            reply = await h.call("boom", query="fail")
            assert (reply[0], reply[2], reply[3]) == (ERROR, 500, "ValueError: boom")
            assert (await h.call("boom"))[4] == b'{"calls":2}'
            errors = [line for line in h.lines if line[2] == "error"]
            assert len(errors) == 1
            assert errors[0][:4] == ("boom", errors[0][1], "error", "req-1")
            assert errors[0][4].startswith("Traceback (most recent call last):")
            assert errors[0][4].endswith("ValueError: boom")

    run(body())


def test_print_and_logging_reach_the_host_tagged(tmp_path: Path) -> None:
    write_function(
        tmp_path,
        "talk",
        """
        import logging
        import sys

        print("loading")

        def handler(request):
            print("hello", "there")
            print("to stderr", file=sys.stderr)
            logging.warning("careful")
            return "ok"
        """,
    )

    async def body() -> None:
        async with harness(tmp_path, "talk") as h:
            await h.call("talk")
            await asyncio.sleep(0.05)
            tagged = [(stream, rid, line) for _, _, stream, rid, line in h.lines]
            assert tagged == [
                ("stdout", "", "loading"),
                ("stdout", "req-1", "hello there"),
                ("stderr", "req-1", "to stderr"),
                ("stderr", "req-1", "WARNING:root:careful"),
            ]

    run(body())


def test_runaway_python_loop_times_out_and_the_function_recovers(tmp_path: Path) -> None:
    write_function(
        tmp_path,
        "spin",
        RUNAWAY,
        "timeout_ms = 300\n",
    )

    async def body() -> None:
        async with harness(tmp_path, "spin") as h:
            started = time.monotonic()
            reply = await h.call("spin", query="forever")
            assert (reply[0], reply[2], reply[3]) == (ERROR, 504, "function spin timed out after 300 ms")
            assert time.monotonic() - started < 1.5
            # Same isolate (state kept): the watchdog interrupted the loop inside it.
            assert (await h.call("spin"))[4] == b'{"calls":2}'
            assert h.pool.abandoned == 0

    run(body())


def test_isolate_stuck_in_c_is_replaced(tmp_path: Path) -> None:
    write_function(
        tmp_path,
        "stuck",
        STUCK_IN_C,
        "timeout_ms = 300\n",
    )

    async def body() -> None:
        async with harness(tmp_path, "stuck", abandon_after=0.2, drain_timeout=0.5) as h:
            assert (await h.call("stuck"))[4] == b'{"calls":1}'
            reply = await h.call("stuck", query="sleep")
            assert reply[2] == 504
            await asyncio.sleep(0.4)
            started = time.monotonic()
            # A fresh isolate of the same version: module state starts over.
            assert (await h.call("stuck"))[4] == b'{"calls":1}'
            assert time.monotonic() - started < 1.0
            assert h.pool.abandoned == 1

    run(body())


@pytest.mark.parametrize(
    ("manifest", "files", "message"),
    [
        (
            'entrypoint = "nothere:handler"',
            {},
            "module not found: entrypoint 'nothere:handler' names module 'nothere', "
            "which is not in the function directory",
        ),
        (
            "",
            {"main.py": "import requests_that_do_not_exist\n"},
            "importing module 'main' raised ModuleNotFoundError: "
            "No module named 'requests_that_do_not_exist'",
        ),
        (
            "",
            {"main.py": "raise RuntimeError('bad config')\n"},
            "importing module 'main' raised RuntimeError: bad config",
        ),
        (
            "",
            {"main.py": "def handler(:\n"},
            "importing module 'main' raised SyntaxError: invalid syntax (main.py, line 1)",
        ),
        (
            'entrypoint = "main:serve"',
            {"main.py": "def handler(r): return 1\n"},
            "entrypoint 'main:serve' not found: module 'main' has no attribute 'serve'",
        ),
        ("", {"main.py": "handler = 3\n"}, "entrypoint 'main:handler' is not callable (it is int)"),
    ],
)
def test_load_errors_say_what_went_wrong(
    tmp_path: Path, manifest: str, files: dict[str, str], message: str
) -> None:
    directory = write_function(
        tmp_path, "broken", files.get("main.py", "def handler(r): return 1\n"), manifest
    )
    if "main.py" not in files and "nothere" in manifest:
        (directory / "main.py").unlink()

    async def body() -> None:
        with pytest.raises(LoadError) as caught:
            async with harness(tmp_path, "broken"):
                pass
        assert str(caught.value) == message

    run(body())


def test_an_isolate_whose_boot_call_raises_fails_to_load_instead_of_hanging(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As on 3.14 when `_interpreters.exec` refused its arguments: the host thread must still report.
    from isolates.backends import subinterpreter

    def refuse(iid: int, source: str, shared: dict[str, Any] | None = None) -> str | None:
        raise TypeError("exec() refused its arguments")

    monkeypatch.setattr(subinterpreter, "call_exec", refuse)
    write_function(tmp_path, "fn", "def handler(r): return 1\n")

    async def body() -> None:
        with pytest.raises(LoadError) as caught:
            async with asyncio.timeout(10), harness(tmp_path, "fn"):
                pass
        assert "cannot boot the interpreter: TypeError: exec() refused its arguments" in str(caught.value)

    run(body())


def test_requests_for_a_busy_isolate_go_in_batches(tmp_path: Path) -> None:
    write_function(
        tmp_path,
        "busy",
        """
        import time

        def handler(request):
            time.sleep(0.002)
            return request.query_string
        """,
    )

    async def body() -> None:
        async with harness(tmp_path, "busy") as h:
            isolate = h.pool.get("busy").pick()  # type: ignore[union-attr]
            assert isolate is not None
            before = isolate.batches
            replies = await asyncio.gather(*(h.call("busy", query=str(n)) for n in range(64)))
            # Every request answered with its own reply, through far fewer queue operations.
            assert [reply[4] for reply in replies] == [str(n).encode() for n in range(64)]
            assert isolate.batches - before <= 8
            assert isolate.wakes <= isolate.batches

    run(body())


def test_requests_of_one_loop_iteration_wake_an_idle_isolate_once(tmp_path: Path) -> None:
    write_function(tmp_path, "idle", "def handler(request):\n    return request.query_string\n")

    async def body() -> None:
        async with harness(tmp_path, "idle") as h:
            isolate = h.pool.get("idle").pick()  # type: ignore[union-attr]
            assert isolate is not None
            await h.call("idle")
            for _ in range(200):  # until the guest sleeps on its eventfd again
                if isolate._flag[0]:
                    break
                await asyncio.sleep(0.005)
            assert isolate._flag[0] == 1
            batches, wakes = isolate.batches, isolate.wakes
            # gather starts all 16 calls in one loop iteration: one batch, one eventfd write.
            replies = await asyncio.gather(*(h.call("idle", query=str(n)) for n in range(16)))
            assert [reply[4] for reply in replies] == [str(n).encode() for n in range(16)]
            assert (isolate.batches - batches, isolate.wakes - wakes) == (1, 1)

    run(body())


def test_a_reply_in_a_batch_of_slow_requests_is_not_held_for_the_rest(tmp_path: Path) -> None:
    write_function(
        tmp_path,
        "slow",
        """
        import time

        def handler(request):
            time.sleep(0.2)
            return "done"
        """,
    )

    async def body() -> None:
        async with harness(tmp_path, "slow") as h:
            started = time.monotonic()
            answered: list[float] = []

            async def call() -> None:
                await h.call("slow")
                answered.append(time.monotonic() - started)

            await asyncio.gather(*(call() for _ in range(3)))
            # One at a time in the isolate: 0.2, 0.4 and 0.6 s, not all three at 0.6 s.
            assert answered[0] < 0.45, answered

    run(body())


def test_async_handlers_run_concurrently(tmp_path: Path) -> None:
    write_function(
        tmp_path,
        "wait",
        """
        import asyncio

        async def handler(request):
            await asyncio.sleep(0.3)
            return request.context.request_id
        """,
    )

    async def body() -> None:
        async with harness(tmp_path, "wait") as h:
            started = time.monotonic()
            replies = await asyncio.gather(*(h.call("wait") for _ in range(10)))
            elapsed = time.monotonic() - started
            assert sorted(r[4] for r in replies) == sorted(f"req-{i}".encode() for i in range(1, 11))
            assert elapsed < 1.0, elapsed

    run(body())


def test_async_handler_past_its_deadline_gets_504(tmp_path: Path) -> None:
    write_function(
        tmp_path,
        "late",
        """
        import asyncio

        async def handler(request):
            if request.query_string == "late":
                await asyncio.sleep(5)
            if request.query_string == "spin":
                while True:
                    pass
            return "on time"
        """,
        "timeout_ms = 300\n",
    )

    async def body() -> None:
        async with harness(tmp_path, "late") as h:
            assert (await h.call("late", query="late"))[2] == 504
            assert (await h.call("late", query="spin"))[2] == 504
            assert (await h.call("late"))[4] == b"on time"
            assert h.pool.abandoned == 0

    run(body())


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs 2 CPUs to show two GILs at work")
def test_two_cpu_bound_functions_run_in_parallel(tmp_path: Path) -> None:
    code = """
        def handler(request):
            total = 0
            for i in range(int(request.query_string)):
                total += i * i
            return str(total)
    """
    write_function(tmp_path, "cpu1", code)
    write_function(tmp_path, "cpu2", code)

    async def body() -> None:
        async with harness(tmp_path, "cpu1", "cpu2") as h:
            n = "3000000"
            await h.call("cpu1", query="1000")
            await h.call("cpu2", query="1000")
            ratios = []
            for _ in range(3):  # the best of three: this machine is shared
                started = time.perf_counter()
                await h.call("cpu1", query=n)
                one = time.perf_counter() - started
                started = time.perf_counter()
                await asyncio.gather(h.call("cpu1", query=n), h.call("cpu2", query=n))
                two = time.perf_counter() - started
                ratios.append(two / one)
            # One shared GIL would make this 2.0; own GILs on two cores make it about 1.0.
            assert min(ratios) < 1.5, ratios

    run(body())


@pytest.mark.parametrize("kind", ["def", "async def"])
def test_switching_versions_under_load_answers_every_request(tmp_path: Path, kind: str) -> None:
    def spec(number: int) -> IsolateSpec:
        directory = write_function(
            tmp_path, f"v{number}", f"{kind} handler(request):\n    return 'v{number}'\n"
        )
        return IsolateSpec(
            name="p",
            version=f"v{number}",
            directory=str(directory),
            module="main",
            attribute="handler",
            timeout_ms=3000,
        )

    async def body() -> None:
        # The warm pool on, as in production: every switch takes a blank isolate.
        pool = IsolatePool(lambda *line: None, warm_pool=2, drain_timeout=5.0)
        await pool.deploy("p", [(spec(0), 100)])
        replies: list[tuple[Any, ...]] = []
        switching = True

        async def client() -> None:
            while switching:
                function = pool.get("p")
                assert function is not None
                isolate = function.pick()
                assert isolate is not None
                replies.append(await isolate.submit("GET", "/p", "", (), b"", "r", time.monotonic() + 3))

        clients = [asyncio.create_task(client()) for _ in range(4)]
        try:
            for number in range(1, 16):
                await asyncio.sleep(0.03)
                await pool.deploy("p", [(spec(number), 100)])
            await asyncio.sleep(0.1)
        finally:
            switching = False
            await asyncio.gather(*clients)
            await pool.close(5.0)
        assert len(replies) > 100
        assert [reply for reply in replies if reply[0] != RESPONSE] == []
        assert replies[-1][4] == b"v15"

    run(body())


def test_a_new_version_of_an_async_function_gets_a_blank_isolate_with_asyncio_imported(
    tmp_path: Path,
) -> None:
    code = """
        import sys

        PREIMPORTED = "asyncio" in sys.modules  # before this module imported anything itself

        async def handler(request):
            return {"preimported": PREIMPORTED}
    """

    async def body() -> None:
        pool = IsolatePool(lambda *line: None, warm_pool=1)
        try:
            for number, expected in ((1, b'{"preimported":false}'), (2, b'{"preimported":true}')):
                directory = write_function(tmp_path, f"v{number}", code)
                spec = isolate_spec(directory, load_manifest(directory, "fn"), f"v{number}")
                await pool.deploy("fn", [(spec, 100)])
                function = pool.get("fn")
                assert function is not None
                isolate = function.pick()
                assert isolate is not None and isolate.is_async
                reply = await isolate.submit("GET", "/", "", (), b"", "r", time.monotonic() + 10)
                assert reply[4] == expected
        finally:
            await pool.close(5.0)

    run(body())
