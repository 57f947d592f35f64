"""The interpreter backend's audit hook: each refusal names the permission, and each grant works."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from node_harness import write_function
from test_isolate_pool import harness

# `?name` runs one probe and answers what it returned or the exception it raised.
SPY = """
    import gc
    import importlib
    import os
    import socket
    import subprocess
    import sys
    import threading

    HERE = os.path.dirname(os.path.abspath(__file__))
    PORT = int(os.environ.get("PORT", "9"))

    def _read(path):
        with open(path, "rb") as file:
            return len(file.read(10))

    def _write(path):
        with open(path, "a") as file:
            return file.write("x")

    def _connect(host, port):
        with socket.create_connection((host, port), timeout=2) as sock:
            return sock.recv(2)

    def _own_pipe():
        r, w = os.pipe()
        os.write(w, b"mine")
        os.close(w)
        data = os.read(r, 10)
        os.close(r)
        return data

    def _optional(name):
        try:
            __import__(name)
        except ImportError:
            return "fell back"
        return "imported"

    PROBES = {
        "environ": lambda: _read("/proc/self/environ"),
        "cmdline": lambda: _read("/proc/self/cmdline"),
        "mem": lambda: _read("/proc/self/mem"),
        "maps": lambda: _read("/proc/self/maps"),
        "pid-environ": lambda: _read(f"/proc/{os.getpid()}/environ"),
        "thread-environ": lambda: _read("/proc/thread-self/environ"),
        "task-cmdline": lambda: _read(f"/proc/{os.getpid()}/task/{threading.get_native_id()}/cmdline"),
        "dotdot-environ": lambda: _read("/proc/self/../self/./environ"),
        "os-open-environ": lambda: os.open("/proc/self/environ", os.O_RDONLY),
        # A descriptor the node's process has open (functions share the process's descriptors).
        "node-fd": lambda: open(int(os.environ["FD"]), "rb", closefd=False).read(),
        "node-fd-link": lambda: _read(f"/proc/self/fd/{os.environ['FD']}"),
        # By number, with the calls that raise no audit event.
        "node-fd-read": lambda: os.read(int(os.environ["FD"]), 10),
        "pipe-read": lambda: os.read(int(os.environ["PIPE_R"]), 10),
        "pipe-write": lambda: os.write(int(os.environ["PIPE_W"]), b"forged"),
        "pipe-close": lambda: os.close(int(os.environ["PIPE_W"])),
        "pipe-dup2": lambda: os.dup2(int(os.environ["PIPE_W"]), int(os.environ["PIPE_R"])),
        "closerange": lambda: os.closerange(3, 4),
        "own-pipe": lambda: _own_pipe(),
        "data": lambda: _read(os.environ["DATA"] + "/applied.json"),
        "data-list": lambda: os.listdir(os.environ["DATA"]),
        "own-bundle": lambda: _read(os.path.join(HERE, "main.py")),
        "own-bundle-write": lambda: _write(os.path.join(HERE, "main.py")),
        "passwd": lambda: _read("/etc/passwd"),
        "hosts": lambda: _read("/etc/hosts"),
        "read-granted": lambda: _read(os.environ["SHARED"] + "/in.txt"),
        "write-outside": lambda: _write(os.environ["SHARED"] + "/out.txt"),
        "write-granted": lambda: _write(os.environ["OUT"] + "/out.txt"),
        "stdlib": lambda: _read(os.__file__),
        "sqlite": lambda: __import__("sqlite3").connect(os.environ["DATA"] + "/state.db"),
        "platform": lambda: __import__("platform").platform() and "platform",
        "import-queues": lambda: __import__("_interpqueues").list_all(),
        "importlib-queues": lambda: importlib.import_module("_interpqueues").list_all(),
        "import-interpreters": lambda: __import__("_interpreters").list_all(),
        "import-runtime": lambda: __import__("_edge_runtime"),
        # As 3.14's concurrent.futures (imported by asyncio) probes for _interpreters.
        "optional": lambda: _optional("_interpreters"),
        "hidden": lambda: sorted(
            name for name in ("_interpqueues", "_interpreters", "_edge_runtime", "_edge_compat",
                              "_edge_guard", "ctypes") if name in sys.modules
        ) + sorted(key for key in vars(sys.modules["__main__"]) if not key.startswith("__")),
        "gc": lambda: len(gc.get_objects()),
        "referrers": lambda: len(gc.get_referrers(sys)),
        "exit": lambda: os._exit(1),
        "abort": lambda: os.abort(),
        "fork": lambda: os.fork(),
        # SIGCONT: harmless should the hook ever let it through.
        "kill": lambda: os.kill(os.getpid(), 18),
        "killpg": lambda: os.killpg(os.getpgid(0), 18),
        "exec": lambda: os.execv("/bin/true", ["true"]),
        "chdir": lambda: os.chdir("/"),
        "remote-exec": lambda: sys.remote_exec(os.getpid(), "/dev/null"),
        "subprocess": lambda: subprocess.run(["true"]).returncode,
        "system": lambda: os.system("true"),
        "spawn": lambda: os.posix_spawn("/bin/true", ["true"], {}),
        # No audit event on this path: fork_exec itself is replaced.
        "spawnv": lambda: os.waitpid(
            __import__("multiprocessing.util").util.spawnv_passfds(b"/bin/true", [b"true"], []), 0
        )[1],
        "reimport-fork-exec": lambda: (
            sys.modules.pop("_posixsubprocess") and __import__("_posixsubprocess").fork_exec()
        ),
        "fork-exec": lambda: subprocess._fork_exec(
            [b"/bin/true"], [b"/bin/true"], True, (), None, None, -1, -1, -1, -1, -1, -1, -1, -1,
            False, False, -1, None, None, None, -1, None
        ),
        "ctypes": lambda: __import__("ctypes").CDLL(None).getpid() == os.getpid(),
        "connect": lambda: _connect("127.0.0.1", PORT),
        "connect-other": lambda: _connect("127.0.0.1", 9),
        "connect-name": lambda: _connect("localhost", PORT),
        "lookup": lambda: socket.getaddrinfo("example.com", 443) and "resolved",
    }

    def handler(request):
        try:
            return f"ok: {PROBES[request.query_string]()!r}"
        except BaseException as exc:
            return f"{type(exc).__name__}: {exc}"
"""


def refused(path: str, reason: str) -> str:
    return f"PermissionError: function spy may not open {path!r}: {reason}"


MEMORY = "the node's process memory and environment are off limits"
ENDS = "it would end the node's process and every function in it"
INTERNALS = "the node's internals are off limits"


def probe(
    tmp_path: Path, manifest: str, queries: list[str], preload: tuple[str, ...] = (), **env: str
) -> dict[str, str]:
    """Deploy the spy with `manifest` (plus env) and run each probe; returns query -> answer."""
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    (data / "applied.json").write_text("{}")
    shared = tmp_path / "shared"
    shared.mkdir(exist_ok=True)
    (shared / "in.txt").write_text("hello")
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    variables = {"DATA": str(data), "SHARED": str(shared), "OUT": str(out), **env}
    env_table = "[env]\n" + "".join(f'{key} = "{value}"\n' for key, value in variables.items())
    write_function(tmp_path / "fn", "spy", SPY, manifest + "\n" + env_table)
    answers: dict[str, str] = {}

    async def body() -> None:
        async with harness(tmp_path / "fn", "spy", protected=(os.path.realpath(data),), preload=preload) as h:
            for query in queries:
                reply = await h.call("spy", query=query)
                answers[query] = reply[4].decode() if reply[0] == 0 else f"{reply[2]} {reply[3]}"

    asyncio.run(body())
    return answers


def test_the_nodes_process_memory_and_environment_are_refused(tmp_path: Path) -> None:
    queries = [
        "environ",
        "cmdline",
        "mem",
        "maps",
        "thread-environ",
        "dotdot-environ",
        "os-open-environ",
        "pid-environ",
        "task-cmdline",
    ]
    answers = probe(tmp_path, "", queries)
    pid = os.getpid()
    paths = {
        "environ": "/proc/self/environ",
        "cmdline": "/proc/self/cmdline",
        "mem": "/proc/self/mem",
        "maps": "/proc/self/maps",
        "thread-environ": "/proc/thread-self/environ",
        "dotdot-environ": "/proc/self/../self/./environ",
        "os-open-environ": "/proc/self/environ",
        "pid-environ": f"/proc/{pid}/environ",
    }
    for query, path in paths.items():
        assert answers[query] == refused(path, MEMORY), query
    assert answers["task-cmdline"].startswith(
        f"PermissionError: function spy may not open '/proc/{pid}/task/"
    )
    assert answers["task-cmdline"].endswith(f"/cmdline': {MEMORY}")


def test_files_outside_the_grants_are_refused(tmp_path: Path) -> None:
    queries = ["data", "data-list", "own-bundle", "own-bundle-write", "passwd", "hosts", "stdlib", "sqlite"]
    queries += ["platform"]
    queries += ["read-granted", "write-outside", "write-granted"]
    answers = probe(tmp_path, "", queries)
    data = tmp_path / "data"
    bundle = tmp_path / "fn" / "spy" / "main.py"
    assert answers["data"] == refused(f"{data}/applied.json", "the node's data directories are off limits")
    assert answers["data-list"] == (
        f"PermissionError: function spy may not list {str(data)!r}: "
        "the node's data directories are off limits"
    )
    assert answers["sqlite"] == refused(f"{data}/state.db", "the node's data directories are off limits")
    assert answers["platform"] == "ok: 'platform'"
    assert answers["own-bundle"] == "ok: 10"
    assert answers["own-bundle-write"] == (
        f"PermissionError: function spy may not open {str(bundle)!r} for writing: "
        "the function's own bundle is read-only"
    )
    assert answers["passwd"] == refused("/etc/passwd", "not in [permissions] read")
    assert answers["hosts"].startswith("ok: ")
    assert answers["stdlib"] == "ok: 10"
    assert answers["read-granted"] == refused(f"{tmp_path}/shared/in.txt", "not in [permissions] read")
    assert answers["write-outside"] == (
        f"PermissionError: function spy may not open '{tmp_path}/shared/out.txt' for writing: "
        "not in [permissions] write"
    )
    assert answers["write-granted"].startswith("PermissionError: ")


def test_a_descriptor_of_the_node_is_judged_by_the_file_it_points_to(tmp_path: Path) -> None:
    secret = tmp_path / "data" / "applied.json"
    secret.parent.mkdir()
    secret.write_text("{}")
    fd = os.open(secret, os.O_RDONLY)
    try:
        answers = probe(tmp_path, "", ["node-fd", "node-fd-link"], FD=str(fd))
    finally:
        os.close(fd)
    off_limits = "the node's data directories are off limits"
    assert answers["node-fd"] == refused(str(secret), off_limits)
    assert answers["node-fd-link"] == refused(f"/proc/self/fd/{fd}", off_limits)


def test_read_and_write_grants_open_exactly_their_paths(tmp_path: Path) -> None:
    manifest = f'[permissions]\nread = ["{tmp_path}/shared"]\nwrite = ["{tmp_path}/out"]\n'
    answers = probe(tmp_path, manifest, ["read-granted", "write-granted", "write-outside", "data"])
    assert answers["read-granted"] == "ok: 5"
    assert answers["write-granted"] == "ok: 1"
    assert (tmp_path / "out" / "out.txt").read_text() == "x"
    assert answers["write-outside"].endswith("for writing: not in [permissions] write")
    assert answers["data"].endswith("the node's data directories are off limits")


def test_the_runtime_and_other_interpreters_are_out_of_reach(tmp_path: Path) -> None:
    queries = ["import-queues", "importlib-queues", "import-interpreters", "import-runtime", "hidden"]
    answers = probe(tmp_path, "", [*queries, "gc", "referrers", "optional"])
    assert answers["optional"] == "ok: 'fell back'"
    for query, module in [
        ("import-queues", "_interpqueues"),
        ("importlib-queues", "_interpqueues"),
        ("import-interpreters", "_interpreters"),
        ("import-runtime", "_edge_runtime"),
    ]:
        assert answers[query] == f"ModuleNotFoundError: function spy may not import {module!r}: {INTERNALS}"
    assert answers["hidden"] == "ok: []"
    assert answers["gc"] == f"PermissionError: function spy may not call gc.get_objects: {INTERNALS}"
    assert answers["referrers"] == f"PermissionError: function spy may not call gc.get_referrers: {INTERNALS}"


def test_what_would_end_the_node_is_refused(tmp_path: Path) -> None:
    answers = probe(tmp_path, "", ["exit", "abort", "fork", "kill", "killpg", "exec", "chdir", "hidden"])
    assert answers["exit"] == f"PermissionError: function spy may not call os._exit: {ENDS}"
    assert answers["abort"] == f"PermissionError: function spy may not call os.abort: {ENDS}"
    # CPython refuses it in an isolated interpreter before the audit event (the hook refuses it too).
    assert answers["fork"] == "RuntimeError: fork not supported for isolated subinterpreters"
    assert (
        answers["kill"]
        == f"PermissionError: function spy may not send signal 18 to process {os.getpid()}: {ENDS}"
    )
    group = os.getpgid(0)
    assert (
        answers["killpg"]
        == f"PermissionError: function spy may not send signal 18 to process group {group}: {ENDS}"
    )
    assert answers["exec"] == "RuntimeError: exec not supported for isolated subinterpreters"
    assert answers["chdir"] == (
        "PermissionError: function spy may not change the working directory: "
        "it is shared by every function in the node's process"
    )


def test_subprocess_and_ctypes_need_a_grant(tmp_path: Path) -> None:
    queries = ["subprocess", "system", "spawn", "spawnv", "fork-exec", "reimport-fork-exec"]
    answers = probe(tmp_path, "", [*queries, "ctypes"])
    grant = "subprocess is not allowed: grant it with [permissions] subprocess = true in edge.toml"
    for query in queries:
        assert answers[query] == f"PermissionError: function spy may not start a process: {grant}", query
    assert answers["ctypes"] == (
        "ModuleNotFoundError: function spy may not import 'ctypes': "
        "ctypes is not allowed: grant it with [permissions] ctypes = true in edge.toml"
    )
    # subprocess imported before the hook (with asyncio, into a blank isolate) is covered too.
    preloaded = probe(tmp_path, "", ["fork-exec"], preload=("asyncio",))
    assert preloaded["fork-exec"] == answers["fork-exec"]
    granted = probe(
        tmp_path, "[permissions]\nsubprocess = true\nctypes = true\n", ["subprocess", "spawnv", "ctypes"]
    )
    assert granted == {"subprocess": "ok: 0", "spawnv": "ok: 0", "ctypes": "ok: True"}


@pytest.fixture
def listener() -> Any:
    """A TCP server on 127.0.0.1 that answers b'hi' to every connection; yields its port."""
    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn:
                conn.sendall(b"hi")

    thread = threading.Thread(target=serve)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    server.close()


def test_net_false_refuses_connections_and_lookups(tmp_path: Path, listener: int) -> None:
    answers = probe(tmp_path, "[permissions]\nnet = false\n", ["connect", "lookup"], PORT=str(listener))
    off = 'network access is off: grant it with [permissions] net = true or ["host:port"] in edge.toml'
    assert (
        answers["connect"]
        == f"PermissionError: function spy may not connect to '127.0.0.1:{listener}': {off}"
    )
    assert answers["lookup"] == f"PermissionError: function spy may not look up 'example.com': {off}"


def test_a_net_list_allows_only_its_targets(tmp_path: Path, listener: int) -> None:
    manifest = f'[permissions]\nnet = ["127.0.0.1:{listener}", "localhost:{listener}"]\n'
    queries = ["connect", "connect-name", "connect-other", "lookup"]
    answers = probe(tmp_path, manifest, queries, PORT=str(listener))
    assert answers["connect"] == "ok: b'hi'"
    assert answers["connect-name"] == "ok: b'hi'"
    assert answers["connect-other"] == (
        "PermissionError: function spy may not connect to '127.0.0.1:9': not in [permissions] net"
    )
    assert (
        answers["lookup"]
        == "PermissionError: function spy may not look up 'example.com': not in [permissions] net"
    )


def test_the_watchdog_still_interrupts_under_the_hook(tmp_path: Path) -> None:
    write_function(
        tmp_path,
        "spin",
        """
        def handler(request):
            while request.query_string == "forever":
                pass
            import sys
            return "ctypes" if "ctypes" in sys.modules else "clean"
        """,
        "timeout_ms = 200\n",
    )

    async def body() -> None:
        async with harness(tmp_path, "spin") as h:
            reply = await h.call("spin", query="forever")
            assert reply[2:] == (504, "function spin timed out after 200 ms")
            # The watchdog loaded ctypes for itself; the function still cannot see it.
            assert (await h.call("spin"))[4] == b"clean"

    asyncio.run(body())


def test_sys_exit_ends_the_request_not_the_isolate(tmp_path: Path) -> None:
    write_function(tmp_path, "quit", "import sys\n\ndef handler(request):\n    sys.exit(3)\n")

    async def body() -> None:
        async with harness(tmp_path, "quit") as h:
            for _ in range(2):
                assert (await h.call("quit"))[2:] == (500, "SystemExit: 3")

    asyncio.run(body())


def test_the_nodes_packages_are_refused_but_a_module_of_the_same_name_in_the_bundle_is_not(
    tmp_path: Path,
) -> None:
    root = Path(__file__).resolve().parents[2]  # where the node's packages live
    write_function(
        tmp_path,
        "names",
        f"""
        import sys

        import cache  # the function's own cache.py

        def handler(request):
            sys.path.append({str(root)!r})
            try:
                __import__(request.query_string)
            except BaseException as exc:
                return f"{{type(exc).__name__}}: {{exc}}"
            return "imported"
        """,
        # Readable, so that only the import rule stands in the way (else the node's directory
        # cannot even be listed: "No module named ...").
        f'[permissions]\nread = ["{root}"]\n',
        files={"cache.py": "X = 1\n"},
    )

    async def body() -> None:
        async with harness(tmp_path, "names") as h:
            for name in ("isolates", "edge"):
                assert (await h.call("names", query=name))[4].decode() == (
                    f"ModuleNotFoundError: function names may not import {name!r}: {INTERNALS}"
                )

    asyncio.run(body())


@pytest.mark.skipif(not hasattr(sys, "remote_exec"), reason="sys.remote_exec is new in 3.14")
def test_sys_remote_exec_is_refused(tmp_path: Path) -> None:
    answers = probe(tmp_path, "", ["remote-exec"])
    assert answers["remote-exec"] == (
        "PermissionError: function spy may not call sys.remote_exec: other processes are off limits"
    )


def test_descriptors_by_number_reach_files_as_their_paths_and_no_pipe_the_function_did_not_make(
    tmp_path: Path,
) -> None:
    # Another isolate's pipe, as the worker holds it: a function must neither read its requests
    # (and assignments, secrets included) nor forge its replies, nor close it.
    secret = tmp_path / "data" / "applied.json"
    secret.parent.mkdir()
    secret.write_text("{}")
    fd = os.open(secret, os.O_RDONLY)
    pipe_r, pipe_w = os.pipe()
    os.write(pipe_w, b"a request")
    queries = ["node-fd-read", "pipe-read", "pipe-write", "pipe-close", "pipe-dup2", "closerange", "own-pipe"]
    try:
        answers = probe(tmp_path, "", queries, FD=str(fd), PIPE_R=str(pipe_r), PIPE_W=str(pipe_w))
        assert os.read(pipe_r, 100) == b"a request"  # nothing was taken, nothing added
        os.write(pipe_w, b"still open")
        assert os.read(pipe_r, 100) == b"still open"
    finally:
        for descriptor in (fd, pipe_r, pipe_w):
            os.close(descriptor)
    prefix = "PermissionError: function spy may not "
    assert answers["node-fd-read"] == (
        f"{prefix}read descriptor {fd} ({str(secret)!r}): the node's data directories are off limits"
    )
    for query, call, number in [
        ("pipe-read", "read", pipe_r),
        ("pipe-write", "write", pipe_w),
        ("pipe-close", "close", pipe_w),
        ("pipe-dup2", "dup2", pipe_w),
    ]:
        assert answers[query].startswith(f"{prefix}{call} descriptor {number} (pipe:["), answers[query]
        assert answers[query].endswith("other functions' requests and secrets)")
    assert answers["closerange"].startswith(f"{prefix}call os.closerange")
    assert answers["own-pipe"] == "ok: b'mine'"
