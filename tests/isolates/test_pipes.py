"""The pipes between the host and an interpreter isolate: frames, large messages, stuck guests, many fds."""

from __future__ import annotations

import asyncio
import marshal
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from node_harness import STUCK_IN_C, write_function
from test_isolate_pool import harness, run

from isolates.backends import RESPONSE
from isolates.backends._frames import FrameReader, FrameWriter, ProtocolError, decode, unread


def test_frames_cross_a_full_pipe_whole_and_in_order_without_blocking_the_loop() -> None:
    async def body() -> None:
        loop = asyncio.get_running_loop()
        read_end, write_end = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        written = 0

        def on_written() -> None:
            nonlocal written
            written += 1

        writer, reader = FrameWriter(loop, write_end, on_written), FrameReader(read_end)
        big = bytes(range(256)) * (12 << 12)  # 12 MiB: more than a grown pipe holds
        # Returns at once: what the pipe does not take waits for writability.
        writer.send(((1, big),))
        writer.send(((2, "after"),))
        assert writer.unsent > 0
        batches: list[tuple[Any, ...]] = []
        done = loop.create_future()

        def on_readable() -> None:
            batches.extend(reader.read())
            if len(batches) == 2:
                done.set_result(None)

        loop.add_reader(read_end, on_readable)
        try:
            await asyncio.wait_for(done, 10)
        finally:
            loop.remove_reader(read_end)
            writer.close()
            os.close(read_end)
        assert batches == [((1, big),), ((2, "after"),)]
        assert written > 0  # the writer said when waiting bytes went in
        assert writer.total == sum(4 + len(marshal.dumps(batch)) for batch in batches)

    run(body())


def test_a_frame_that_is_no_batch_is_a_protocol_error_naming_it() -> None:
    with pytest.raises(ProtocolError, match=r"^a frame of list$"):
        decode(bytearray(b"\x05\x00\x00\x00" + marshal.dumps([1])[:1]) + b"\x00" * 4)
    with pytest.raises(ProtocolError, match=r"^a frame of 4294967295 bytes$"):
        decode(bytearray(b"\xff\xff\xff\xff"))
    with pytest.raises(ProtocolError, match=r"^an undecodable frame \(bad marshal data"):
        decode(bytearray(b"\x02\x00\x00\x00\xff\xff"))
    partial = bytearray(b"\x09\x00\x00\x00abc")
    assert decode(partial) == []
    assert partial == bytearray(b"\x09\x00\x00\x00abc")  # kept for its rest


def test_a_10_mb_body_and_reply_cross_both_pipes(tmp_path: Path) -> None:
    write_function(tmp_path, "echo", "def handler(request):\n    return request.body[::-1]\n")

    async def body() -> None:
        async with harness(tmp_path, "echo") as h:
            payload = os.urandom(10 << 20)
            replies = await asyncio.gather(
                h.call("echo", method="POST", body=payload), h.call("echo", method="POST", body=b"small")
            )
            assert replies[0][:3] == (RESPONSE, replies[0][1], 200)
            assert replies[0][4] == payload[::-1]
            assert replies[1][4] == b"llams"

    run(body())


def test_requests_waiting_in_the_pipe_of_a_stuck_isolate_go_to_its_successor(tmp_path: Path) -> None:
    # STUCK_IN_C, sleeping 1 s in C: past the deadline and the abandon time, not much longer.
    code = STUCK_IN_C.replace("time.sleep(3)", "time.sleep(1)")
    write_function(tmp_path, "stuck", code, "timeout_ms = 300\n")

    async def body() -> None:
        async with harness(tmp_path, "stuck", abandon_after=0.2, drain_timeout=0.5) as h:
            assert (await h.call("stuck"))[4] == b'{"calls":1}'
            function = h.pool.get("stuck")
            assert function is not None
            isolate = function.pick()
            assert isolate is not None
            sent = isolate.batches
            stuck = isolate.submit("GET", "/", "sleep", (), b"", "r-stuck", time.monotonic() + 0.3)
            guest_in = isolate._guest_in  # type: ignore[attr-defined]
            # Until the guest took that frame (it then sleeps in C).
            while isolate.batches == sent or unread(guest_in):
                await asyncio.sleep(0.001)
            # These wait in the pipe (the guest sleeps in C) with deadlines past the replacement.
            later = [
                isolate.submit("GET", "/", "", (), b"", f"r-{n}", time.monotonic() + 5.0) for n in range(3)
            ]
            await asyncio.sleep(0)  # (flushed at the next loop iteration)
            while not unread(guest_in):
                await asyncio.sleep(0.001)
            assert (await stuck)[2] == 504
            replies = await asyncio.gather(*later)
            # A fresh isolate answered them: its module state starts over.
            assert sorted(reply[4] for reply in replies) == [b'{"calls":1}', b'{"calls":2}', b'{"calls":3}']
            assert h.pool.abandoned == 1
            # Once its sleep returns, the abandoned guest reads the end of its pipe and stops.
            while not isolate.exited:
                await asyncio.sleep(0.01)

    run(body())


def test_isolates_serve_with_descriptors_past_fd_setsize(tmp_path: Path) -> None:
    # select() refuses a descriptor >= 1024: a node with ~500 functions had them, and its
    # guests crashed when they waited for work.
    write_function(tmp_path, "hello", 'def handler(request):\n    return "hello"\n')
    fillers = [os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC) for _ in range(1100)]
    try:

        async def body() -> None:
            async with harness(tmp_path, "hello") as h:
                function = h.pool.get("hello")
                assert function is not None
                isolate = function.pick()
                assert isolate is not None
                assert isolate._wake_fd > 1100  # type: ignore[attr-defined]
                for _ in range(3):  # the guest waits for work between them
                    assert (await h.call("hello"))[4] == b"hello"
                assert function.pick() is isolate
                assert isolate.alive

        run(body())
    finally:
        for fd in fillers:
            os.close(fd)


def test_the_backend_raises_the_open_files_limit_for_its_descriptors() -> None:
    # Five descriptors per isolate: a soft limit of 1024 would stop a node at about 200 functions.
    code = (
        "import resource\n"
        "soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))\n"
        "from isolates.backends.subinterpreter import raise_open_files_limit\n"
        "raise_open_files_limit()\n"
        "now = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
        "print(now[0] == min(hard, 1 << 20) if hard != resource.RLIM_INFINITY else now[0] == 1 << 20)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout == "True\n", result.stderr
