"""The process backend driven directly in a loop: real confined children, their limits and recovery."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Coroutine
from pathlib import Path
from typing import Any

import pytest
from node_harness import write_function

from edge.node.functions import content_version, isolate_spec
from isolates.backends import ERROR, RESPONSE, BackendOptions, LoadError
from isolates.backends.process import ProcessBackend, ProcessIsolate, function_uid
from isolates.guest import GUEST_DIR
from isolates.manifest import load_manifest

ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="the uid change and the mount view need root")

# Everything a hostile function would try, chosen by the query string; results as JSON.
SPY = """
    import os
    import socket

    def attempt(action):
        try:
            return ["ok", action()]
        except OSError as exc:
            return ["refused", type(exc).__name__]

    def read(path):
        with open(path, "rb") as file:
            return len(file.read())

    def write(path):
        with open(path, "w") as file:
            return file.write("x")

    def connect(port):
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return "connected"

    def handler(request):
        what, _, arg = request.query_string.partition("=")
        if what == "who":
            status = open("/proc/self/status").read()
            nnp = [line for line in status.splitlines() if line.startswith("NoNewPrivs:")]
            return {"uid": os.getuid(), "gid": os.getgid(), "groups": os.getgroups(), "nnp": nnp,
                    "environ": attempt(lambda: read("/proc/self/environ"))}
        if what == "read":
            return attempt(lambda: read(arg))
        if what == "write":
            return attempt(lambda: write(arg))
        if what == "connect":
            return attempt(lambda: connect(int(arg)))
        if what == "tmp":
            import tempfile
            with tempfile.NamedTemporaryFile() as file:
                file.write(b"scratch")
                file.flush()
                contents = open(file.name, "rb").read().decode()
            return [contents, sorted(os.listdir("/tmp"))]
        if what == "unshare":
            # In a single-threaded process (a fork of this one), where unshare could succeed.
            pid = os.fork()
            if pid == 0:
                try:
                    os.unshare(os.CLONE_NEWUSER)
                    os._exit(0)
                except OSError as exc:
                    os._exit(exc.errno)
            return [os.strerror(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))]
        if what == "thread":
            import threading
            done = []
            thread = threading.Thread(target=lambda: done.append(1))
            thread.start()
            thread.join()
            return done
        if what == "forge":
            import sys
            # Garbage on the reply pipe (its fd is the child's second argument).
            os.write(int(sys.argv[2]), (12).to_bytes(4, "little") + b"not marshal!")
            return "forged"
        if what in ("forge-stream", "forge-chunk"):
            import marshal
            import sys
            # Well-framed, well-marshalled messages of the wrong shape: a STREAM with a status
            # out of range, a CHUNK whose data is text.
            message = (4, 1, 99999, ()) if what == "forge-stream" else (5, 1, "text", True)
            frame = marshal.dumps((message,))
            os.write(int(sys.argv[2]), len(frame).to_bytes(4, "little") + frame)
            return "forged"
        if what == "listen":
            return attempt(lambda: socket.create_server(("127.0.0.1", 0)).close())
        if what == "run":
            import subprocess
            return attempt(lambda: subprocess.run(["/bin/echo", "ran"], capture_output=True).stdout.decode())
        if what == "pids":
            return attempt(lambda: sorted(int(p) for p in os.listdir("/proc") if p.isdigit()))
        return "spy"
"""

CRASH = """
    import ctypes
    import os
    import time

    calls = 0

    def handler(request):
        global calls
        calls += 1
        if request.query_string == "exit":
            os._exit(3)
        if request.query_string == "segfault":
            ctypes.string_at(0)
        if request.query_string == "sleep":
            time.sleep(30)
        while request.query_string == "spin":
            pass
        return {"calls": calls, "pid": os.getpid()}
"""

HOG = """
    chunks = []

    def handler(request):
        if request.query_string == "hog":
            while True:
                chunks.append(b"x" * (10 << 20))
        return {"chunks": len(chunks)}
"""


def run(coroutine: Coroutine[Any, Any, None]) -> None:
    asyncio.run(coroutine)


class Harness:
    """A process backend in a running loop, the log lines it produced and the stuck reports."""

    def __init__(self, backend: ProcessBackend, lines: list[tuple[str, ...]]) -> None:
        self.backend = backend
        self.lines = lines
        self.stuck: list[Any] = []
        self.isolates: list[ProcessIsolate] = []
        self.count = 0

    async def start(self, directory: Path, expect_async: bool = False) -> ProcessIsolate:
        spec = isolate_spec(directory, load_manifest(directory), content_version(directory))
        isolate = self.backend.take(spec, self.stuck.append, expect_async)
        self.isolates.append(isolate)
        await isolate.ready
        if isolate.is_async:
            self.backend.saw_async()  # as the pool does
        return isolate

    def submit(self, isolate: ProcessIsolate, query: str = "", body: bytes = b"") -> asyncio.Future[Any]:
        self.count += 1
        deadline = time.monotonic() + isolate.spec.timeout_ms / 1000
        return isolate.submit("POST", "/x", query, [(b"x-a", b"1")], body, f"req-{self.count}", deadline)

    async def call(self, isolate: ProcessIsolate, query: str = "", body: bytes = b"") -> tuple[Any, ...]:
        return await self.submit(isolate, query, body)

    async def json(self, isolate: ProcessIsolate, query: str = "") -> Any:
        reply = await self.call(isolate, query)
        assert reply[0] == RESPONSE, reply
        return json.loads(reply[4])


@contextlib.asynccontextmanager
async def harness(memory_cgroup: str | None = None, **options: Any) -> AsyncIterator[Harness]:
    lines: list[tuple[str, ...]] = []
    fields: dict[str, Any] = {"warm_pool": 0, "abandon_after": 0.3, **options}
    backend = ProcessBackend(
        asyncio.get_running_loop(), lambda *line: lines.append(line), BackendOptions(**fields), memory_cgroup
    )
    h = Harness(backend, lines)
    try:
        yield h
    finally:
        pids = [isolate.pid for isolate in h.isolates if isolate.pid is not None]
        await asyncio.gather(*(isolate.close(5.0) for isolate in h.isolates))
        await backend.close(5.0)
        for pid in pids:
            assert not os.path.exists(f"/proc/{pid}"), f"child {pid} left behind"


def process_function(root: Path, name: str, code: str, manifest: str = "") -> Path:
    return write_function(root, name, code, f'isolation = "process"\n{manifest}')


def test_hello_with_request_context_and_log_lines(tmp_path: Path) -> None:
    directory = process_function(
        tmp_path,
        "hello",
        """
        import os
        import sys

        def handler(request):
            print("hi from", request.path)
            print("to stderr", file=sys.stderr)
            return {"method": request.method, "query": request.query_string, "body": request.text(),
                    "header": request.headers["X-A"], "id": request.context.request_id,
                    "function": request.context.function, "env": dict(os.environ),
                    "remaining": 0 < request.context.remaining_ms <= 2000}
        """,
        'timeout_ms = 2000\n[env]\nGREETING = "hi"\n',
    )

    async def body() -> None:
        async with harness() as h:
            isolate = await h.start(directory)
            assert not isolate.is_async
            assert await h.json(isolate, "a=1") == {
                "method": "POST",
                "query": "a=1",
                "body": "",
                "header": "1",
                "id": "req-1",
                "function": "hello",
                "env": {"GREETING": "hi"},
                "remaining": True,
            }
            reply = await h.call(isolate, body=b"\xff" * 3)
            assert reply[:3] == (ERROR, 2, 500)
            assert reply[3].startswith("UnicodeDecodeError: ")
            version = isolate.spec.version
            assert ("hello", version, "stdout", "req-1", "hi from /x") in h.lines
            assert ("hello", version, "stderr", "req-1", "to stderr") in h.lines

    run(body())


def test_concurrent_requests_to_an_async_handler_overlap(tmp_path: Path) -> None:
    directory = process_function(
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
        async with harness() as h:
            isolate = await h.start(directory)
            assert isolate.is_async
            started = time.monotonic()
            replies = await asyncio.gather(*(h.call(isolate) for _ in range(10)))
            assert time.monotonic() - started < 1.5
            assert sorted(reply[4] for reply in replies) == sorted(f"req-{i}".encode() for i in range(1, 11))

    run(body())


def test_a_function_that_fails_to_import_is_a_load_error(tmp_path: Path) -> None:
    directory = process_function(tmp_path, "bad", "raise RuntimeError('bad config')\n")

    async def body() -> None:
        async with harness() as h:
            with pytest.raises(LoadError) as failed:
                await h.start(directory)
            assert str(failed.value) == "importing module 'main' raised RuntimeError: bad config"
            isolate = h.isolates[0]
            assert not isolate.alive
            assert await h.call(isolate) == (ERROR, 0, 503, "function bad is not running")

    run(body())


def test_a_python_loop_past_its_deadline_is_a_504_in_the_same_child(tmp_path: Path) -> None:
    directory = process_function(tmp_path, "crash", CRASH, "timeout_ms = 300\n")

    async def body() -> None:
        async with harness() as h:
            isolate = await h.start(directory)
            first = await h.json(isolate)
            assert await h.call(isolate, "spin") == (ERROR, 2, 504, "function crash timed out after 300 ms")
            assert await h.json(isolate) == {"calls": 3, "pid": first["pid"]}
            assert h.stuck == []

    run(body())


def test_a_child_stuck_in_c_is_killed_and_replaced(tmp_path: Path) -> None:
    directory = process_function(tmp_path, "crash", CRASH, "timeout_ms = 300\n")

    async def body() -> None:
        async with harness(abandon_after=0.2) as h:
            isolate = await h.start(directory)
            first = await h.json(isolate)
            stuck = h.submit(isolate, "sleep")
            behind = h.submit(isolate)
            assert await stuck == (ERROR, 2, 504, "function crash timed out after 300 ms")
            # Queued behind the stuck call, it too passed its deadline while waiting.
            assert (await behind)[2] == 504
            started = time.monotonic()
            while isolate.replacements == 0:
                assert time.monotonic() - started < 3.0
                await asyncio.sleep(0.02)
            assert not os.path.exists(f"/proc/{first['pid']}")
            again = await h.json(isolate)
            assert again["calls"] == 1
            assert again["pid"] != first["pid"]
            assert h.stuck == [isolate]

    run(body())


@pytest.mark.parametrize(
    ("query", "error"),
    [
        ("exit", "function crash crashed (exit status 3)"),
        ("segfault", "function crash crashed (signal SIGSEGV)"),
    ],
)
def test_a_crash_is_a_502_and_a_new_child_serves_the_next_request(
    tmp_path: Path, query: str, error: str
) -> None:
    directory = process_function(tmp_path, "crash", CRASH)

    async def body() -> None:
        async with harness() as h:
            isolate = await h.start(directory)
            first = await h.json(isolate)
            crash = h.submit(isolate, query)
            # Sent in the same batch, behind the crash: it moves to the replacement.
            behind = h.submit(isolate)
            assert await crash == (ERROR, 2, 502, error)
            after = json.loads((await behind)[4])
            assert after["calls"] == 1
            assert after["pid"] != first["pid"]
            assert isolate.alive
            assert h.stuck == [isolate]
            assert await h.json(isolate) == {"calls": 2, "pid": after["pid"]}

    run(body())


@pytest.mark.parametrize("limit", ["cgroup", "rlimit"])
def test_past_its_memory_limit_a_child_is_a_503_naming_the_limit_and_is_replaced(
    tmp_path: Path, limit: str
) -> None:
    directory = process_function(tmp_path, "hog", HOG, "memory_mb = 64\n")
    if limit == "cgroup" and not ProcessBackend.memory_cgroup_available():
        pytest.skip("no writable v1 memory cgroup here")

    async def body() -> None:
        async with harness(memory_cgroup=None if limit == "cgroup" else "") as h:
            isolate = await h.start(directory)
            reply = await h.call(isolate, "hog")
            assert reply == (ERROR, 1, 503, "function hog exceeded its memory limit of 64 MiB")
            assert await h.json(isolate) == {"chunks": 0}
            assert h.stuck == [isolate]

    run(body())


def test_a_child_past_its_cpu_time_is_a_503_and_is_replaced(tmp_path: Path) -> None:
    directory = process_function(tmp_path, "crash", CRASH, "timeout_ms = 10000\n")

    async def body() -> None:
        async with harness(cpu_s=1) as h:
            isolate = await h.start(directory)
            first = await h.json(isolate)
            reply = await h.call(isolate, "spin")
            assert reply == (ERROR, 2, 503, "function crash used its CPU time limit of 1 s")
            again = await h.json(isolate)
            assert again["calls"] == 1
            assert again["pid"] != first["pid"]
            assert h.stuck == [isolate]

    run(body())


@needs_root
def test_a_child_runs_under_its_own_uid_with_no_new_privs_and_a_clean_environment(tmp_path: Path) -> None:
    directory = process_function(tmp_path, "spy", SPY)

    async def body() -> None:
        async with harness() as h:
            isolate = await h.start(directory)
            uid = function_uid("spy", h.backend.options)
            assert 61000 <= uid < 62000
            assert await h.json(isolate, "who") == {
                "uid": uid,
                "gid": uid,
                "groups": [],
                "nnp": ["NoNewPrivs:\t1"],
                # Not dumpable since it dropped root: its /proc files are root's.
                "environ": ["refused", "PermissionError"],
            }
            # Its initial environment (what the kernel keeps) has nothing of the node's.
            environ = Path(f"/proc/{isolate.pid}/environ").read_bytes().split(b"\0")
            assert sorted(entry.partition(b"=")[0] for entry in environ if entry) == [b"LANG", b"PATH"]
            # Its own procfs hides the node and pid 1; it may not even list /proc, nor read the
            # node's network namespace (every client connection) or its mounts (host paths).
            assert await h.json(isolate, "pids") == ["refused", "PermissionError"]
            for path in ("/proc/net/tcp", "/proc/self/net/tcp", "/proc/self/mountinfo", "/proc/1/cmdline"):
                assert (await h.json(isolate, f"read={path}"))[0] == "refused", path
            assert (await h.json(isolate, "read=/proc/self/cmdline"))[0] == "ok"

    run(body())


@needs_root
def test_the_file_system_is_confined_to_the_bundle_and_the_grants(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "bundles").mkdir(parents=True)
    (data / "applied.json").write_text("secret")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "note").write_text("n")
    # Root's, mode 0755: the function's uid owns it in its own view (an idmapped mount).
    writable = tmp_path / "scratch"
    writable.mkdir(mode=0o755)
    # The function's own bundle lives under the protected data directory and stays readable.
    directory = process_function(
        data / "bundles", "spy", SPY, f'[permissions]\nwrite = ["{writable}"]\nread = ["{outside}/note"]\n'
    )
    (directory / "own.txt").write_text("mine")

    async def body() -> None:
        async with harness(protected=(str(data),)) as h:
            isolate = await h.start(directory)
            assert await h.json(isolate, f"read={directory}/own.txt") == ["ok", 4]
            assert await h.json(isolate, f"read={outside}/note") == ["ok", 1]
            assert await h.json(isolate, f"read={data}/applied.json") == ["refused", "FileNotFoundError"]
            assert await h.json(isolate, "read=/proc/1/environ") == ["refused", "FileNotFoundError"]
            assert await h.json(isolate, f"read={os.path.realpath('/etc/shadow')}") == [
                "refused",
                "PermissionError",
            ]
            assert await h.json(isolate, f"write={writable}/out") == ["ok", 1]
            assert (writable / "out").read_text() == "x"
            # On disk what it made belongs to the node's user, not to the function's uid.
            assert (writable / "out").stat().st_uid == os.geteuid()
            assert await h.json(isolate, f"write={outside}/new") == ["refused", "PermissionError"]
            assert await h.json(isolate, f"write={directory}/main.py") == ["refused", "PermissionError"]
            assert not (outside / "new").exists()

    run(body())


def test_landlock_refuses_what_plain_permissions_would_allow(tmp_path: Path) -> None:
    directory = process_function(tmp_path, "spy", SPY)
    # Outside every grant: world-readable and world-writable, yet off limits. (Not under /tmp:
    # a child has a /tmp of its own.)
    public = Path(tempfile.mkdtemp(prefix="edge-landlock-", dir="/var/tmp"))
    try:
        public.chmod(0o777)
        (public / "note").write_text("n")
        (public / "note").chmod(0o666)

        async def body() -> None:
            async with harness() as h:
                isolate = await h.start(directory)
                assert await h.json(isolate, f"read={public}/note") == ["refused", "PermissionError"]
                assert await h.json(isolate, f"write={public}/note") == ["refused", "PermissionError"]
                assert await h.json(isolate, f"write={public}/new") == ["refused", "PermissionError"]
                # The node's own code is world-readable too. (A checkout under /tmp is not even
                # in the child's view: its /tmp is its own.)
                hidden = "FileNotFoundError" if _under_tmp(__file__) else "PermissionError"
                assert await h.json(isolate, f"read={__file__}") == ["refused", hidden]

        run(body())
    finally:
        shutil.rmtree(public)


def test_a_read_grant_that_holds_a_protected_file_has_a_hole_there(tmp_path: Path) -> None:
    # A node token file inside a directory a function may read, world-readable: neither the mount
    # view (it masks directories) nor a uid of its own (a node that is not root has none) keeps
    # it out; Landlock must, although it only ever adds access.
    public = Path(tempfile.mkdtemp(prefix="edge-landlock-", dir="/var/tmp"))
    try:
        public.chmod(0o755)
        credentials = public / "credentials"
        credentials.mkdir()
        for path in (public / "note", credentials / "node-token", credentials / "other"):
            path.write_text("x")
            path.chmod(0o644)
        token = credentials / "node-token"
        directory = process_function(tmp_path, "spy", SPY, f'[permissions]\nread = ["{public}"]\n')

        async def body() -> None:
            async with harness(protected=(str(token),)) as h:
                isolate = await h.start(directory)
                assert await h.json(isolate, f"read={token}") == ["refused", "PermissionError"]
                assert await h.json(isolate, f"read={public}/note") == ["ok", 1]
                assert await h.json(isolate, f"read={credentials}/other") == ["ok", 1]

        run(body())
    finally:
        shutil.rmtree(public)


def _under_tmp(path: Path | str) -> bool:
    parts = Path(path).resolve().parts
    return len(parts) > 2 and parts[1] == "tmp"


@needs_root
def test_a_child_has_a_private_tmp(tmp_path: Path) -> None:
    directory = process_function(tmp_path, "spy", SPY)
    host_file = Path(tempfile.mkstemp(prefix="edge-host-")[1])
    host_file.chmod(0o644)
    try:

        async def body() -> None:
            async with harness() as h:
                isolate = await h.start(directory)
                contents, listing = await h.json(isolate, "tmp")
                assert contents == "scratch"
                # The host's /tmp is out of sight: only the ways to what the child needs (the
                # bundle, a pytest directory here; the guest runtime when this checkout is under
                # /tmp) were bound back.
                assert host_file.name not in listing
                needed = (tmp_path, GUEST_DIR, Path(sys.base_prefix).resolve())
                assert listing == sorted({path.parts[2] for path in needed if _under_tmp(path)})
                assert await h.json(isolate, f"read={host_file}") == ["refused", "FileNotFoundError"]

        run(body())
    finally:
        host_file.unlink()


@pytest.mark.parametrize("grant", ["false", "port", "true"])
def test_tcp_connect_only_where_net_allows(tmp_path: Path, grant: str) -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        net = {"false": "false", "port": f'["127.0.0.1:{port}"]', "true": "true"}[grant]
        directory = process_function(tmp_path, "spy", SPY, f"[permissions]\nnet = {net}\n")

        async def body() -> None:
            async with harness() as h:
                isolate = await h.start(directory)
                expected = ["refused", "PermissionError"] if grant == "false" else ["ok", "connected"]
                assert await h.json(isolate, f"connect={port}") == expected
                # A port list grants those ports only (on any host: Landlock rules are per port).
                with socket.create_server(("127.0.0.1", 0)) as other:
                    other_port = other.getsockname()[1]
                    allowed = grant == "true"
                    assert await h.json(isolate, f"connect={other_port}") == (
                        ["ok", "connected"] if allowed else ["refused", "PermissionError"]
                    )
                # Whatever `net` says, a function does not listen.
                assert await h.json(isolate, "listen") == ["refused", "PermissionError"]

        run(body())


def test_a_syscall_filter_refuses_new_namespaces_and_threads_still_start(tmp_path: Path) -> None:
    directory = process_function(tmp_path, "spy", SPY)

    async def body() -> None:
        async with harness() as h:
            isolate = await h.start(directory)
            assert await h.json(isolate, "unshare") == ["Operation not permitted"]
            # clone3 answers ENOSYS: libc falls back to clone, whose flags the filter checks.
            assert await h.json(isolate, "thread") == [1]

    run(body())


def test_a_child_that_forges_replies_is_replaced(tmp_path: Path) -> None:
    directory = process_function(tmp_path, "spy", SPY)

    async def body() -> None:
        async with harness() as h:
            isolate = await h.start(directory)
            first = isolate.pid
            reply = await h.call(isolate, "forge")
            assert reply == (ERROR, 1, 502, "function spy sent a malformed reply; its process was replaced")
            assert (await h.call(isolate))[4] == b"spy"
            assert isolate.pid != first

    run(body())


@pytest.mark.parametrize("what", ["forge-stream", "forge-chunk"])
def test_a_child_that_forges_stream_messages_is_replaced(tmp_path: Path, what: str) -> None:
    directory = process_function(tmp_path, "spy", SPY)

    async def body() -> None:
        async with harness() as h:
            isolate = await h.start(directory)
            first = isolate.pid
            reply = await h.call(isolate, what)
            assert reply == (ERROR, 1, 502, "function spy sent a malformed reply; its process was replaced")
            assert (await h.call(isolate))[4] == b"spy"
            assert isolate.pid != first

    run(body())


@pytest.mark.parametrize("granted", [False, True])
def test_programs_run_only_with_the_subprocess_permission(tmp_path: Path, granted: bool) -> None:
    manifest = f"[permissions]\nsubprocess = {str(granted).lower()}\n"
    directory = process_function(tmp_path, "spy", SPY, manifest)

    async def body() -> None:
        async with harness() as h:
            isolate = await h.start(directory)
            expected = ["ok", "ran\n"] if granted else ["refused", "PermissionError"]
            assert await h.json(isolate, "run") == expected

    run(body())


def test_warm_pool_children_take_new_functions_fast_and_close_leaves_no_child(tmp_path: Path) -> None:
    sync = [process_function(tmp_path, f"f{i}", "def handler(request):\n    return 'hi'\n") for i in range(4)]
    asynchronous = [
        process_function(tmp_path, f"a{i}", "async def handler(request):\n    return 'hi'\n")
        for i in range(3)
    ]

    async def cold_start(h: Harness, directory: Path, expect_async: bool = False) -> float:
        started = time.perf_counter()
        isolate = await h.start(directory, expect_async)
        assert (await h.call(isolate))[4] == b"hi"
        elapsed = time.perf_counter() - started
        await asyncio.sleep(0.4)  # the pool refills in the background
        return elapsed

    async def body() -> None:
        async with harness(warm_pool=2) as h:
            # No blank child before the first process function.
            assert h.backend._standby == []
            await cold_start(h, sync[0])
            sync_times = [await cold_start(h, directory) for directory in sync[1:]]
            await cold_start(h, asynchronous[0])
            # The first async handler makes the pool keep a child with asyncio imported, for the
            # versions the pool expects to be async (new versions of an async function).
            assert len(h.backend._standby_async) == 1
            async_times = [await cold_start(h, directory, True) for directory in asynchronous[1:]]
            # Generous bounds for a shared VM: a warm child loads hello in a few milliseconds.
            assert statistics.median(sync_times) < 0.05, sync_times
            assert min(async_times) < 0.05, async_times
            blank = [child.pid for child in h.backend._standby + h.backend._standby_async]
            assert len(blank) == 3
        for pid in blank:
            assert not os.path.exists(f"/proc/{pid}")

    run(body())
