"""The audit hook (PEP 578) that keeps a function to its `[permissions]`, installed before its code runs.

`sys.addaudithook` inside an isolate applies to that interpreter only, for every thread in it.
This is defence in depth for code the operator trusts, not a security boundary: native code
(ctypes when granted, C extensions), descriptors reached other ways than the replaced os calls
(`socket.socket(fileno=N)`, `fcntl`, `mmap`) and Python-level introspection of the runtime's
objects (frames, `__globals__`, a builtin's `__self__`, a replaced call's closure) all get past it.

What it refuses (paths are compared after resolving `..` and symlinks; a descriptor by its
/proc/self/fd link):
- files (open, os.open, io.open_code, os.listdir/scandir, the os calls that change files,
  sqlite3.connect): /proc/<pid>[/task/<tid>]/{environ,cmdline,mem,maps,...} always; the
  protected directories (the node's data and state) except the function's own bundle, which is
  read-only; writes outside `write` (and /dev/null); reads outside `read`/`write`, the bundle,
  the standard library (not its site-packages), the guest runtime and SYSTEM_READ;
- imports of the interpreter APIs and the runtime's modules (`_INTERNAL`), of the node's packages
  unless the bundle has a module of that name, of ctypes unless granted; gc.get_objects and
  gc.get_referrers (modules the runtime loaded leave sys.modules and __main__: see `conceal`);
- by descriptor number (os.read/write/readv/writev/pread/pwrite, sendfile, splice,
  copy_file_range, dup, dup2, close, fsync; replaced, as none raises an event): a file as its
  path would be opened; a pipe, socket or eventfd only if this interpreter made it; closerange;
- os._exit and os.abort (replaced: neither raises an event), fork, exec, a signal to the node's
  pids or process group, and what is shared by the whole process: chdir, putenv/unsetenv,
  setrlimit/prlimit, sethostname; sys.remote_exec (3.14) into any process;
- unless granted: starting processes (subprocess.Popen, os.system, os.posix_spawn, and
  _posixsubprocess.fork_exec, which raises no event and is replaced as it loads) and ctypes
  (its dlopen/dlsym/memory events, except on the watchdog's thread);
- `net = false`: connect/sendto/bind and name lookups; a list: connects only to its targets (a
  listed name's addresses are looked up by the hook, kept a minute), lookups of listed names
  only, no bind. A Unix socket path needs `write` whatever `net` says.

Refusals raise PermissionError("function NAME may not ACTION: REASON") (imports: ModuleNotFoundError,
so that code probing for an optional module falls back); where a permission allows it, REASON
names it.
Standard library only, cheap to import (no `re`, no `typing`); the runtime imports it while the
isolate is still blank. The hook's first step is one dict lookup on the event name: no event
fires while a warm function answers a plain request.
"""

from __future__ import annotations

import _thread
import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["SYSTEM_READ", "SYSTEM_WRITE", "conceal", "install", "runtime_loaded_ctypes", "watchdog_moved"]

# Files of a process under /proc/<pid>/ (and /proc/<pid>/task/<tid>/) that hold its memory,
# its environment or its command line: never readable, whatever `read` grants.
_PROCESS_FILES = frozenset(
    {"environ", "cmdline", "mem", "maps", "smaps", "smaps_rollup", "numa_maps", "pagemap", "auxv", "stack"}
)
# Harmless system files every function may read without a grant (name resolution, time zones,
# TLS roots, MIME types, randomness); a directory allows everything under it.
SYSTEM_READ = (
    "/dev/null",
    "/dev/zero",
    "/dev/random",
    "/dev/urandom",
    "/etc/hosts",
    "/etc/host.conf",
    "/etc/resolv.conf",
    "/etc/nsswitch.conf",
    "/etc/gai.conf",
    "/etc/services",
    "/etc/protocols",
    "/etc/mime.types",
    "/etc/localtime",
    "/usr/share/zoneinfo",
    "/etc/ssl/certs",
    "/etc/ssl/cert.pem",
    "/usr/lib/ssl",
    "/usr/share/ca-certificates",
    "/etc/ca-certificates",
    "/etc/pki/tls",
    "/etc/os-release",
    "/usr/lib/os-release",
)
SYSTEM_WRITE = ("/dev/null",)
# Imports refused from user code (also taken out of sys.modules by `conceal`). The node's packages
# (edge, isolates, cache) are refused only when found outside the bundle: a function may have a
# module of its own called `cache`.
_INTERNAL = frozenset(
    {
        "_interpreters",
        "_interpqueues",
        "_interpchannels",
        "_xxsubinterpreters",
        "_xxinterpchannels",
        "_xxinterpqueues",
        "_edge_runtime",
        "_edge_compat",
        "_edge_guard",
        # Always in sys.modules: importing it again would bring back the real os._exit.
        "posix",
    }
)
_NODE_PACKAGES = frozenset({"edge", "isolates", "cache"})
_CTYPES = frozenset({"ctypes", "_ctypes"})
_CTYPES_EVENTS = frozenset(
    {
        "ctypes.dlopen",
        "ctypes.dlsym",
        "ctypes.dlsym/handle",
        "ctypes.cdata",
        "ctypes.cdata/buffer",
        "ctypes.addressof",
        "ctypes.string_at",
        "ctypes.wstring_at",
        "ctypes.memoryview_at",
        "ctypes.call_function",
    }
)
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC

_OFF_LIMITS_MEMORY = "the node's process memory and environment are off limits"
_OFF_LIMITS_DATA = "the node's data directories are off limits"
_INTERNALS = "the node's internals are off limits"
_ENDS_NODE = "it would end the node's process and every function in it"
_PROCESS_WIDE = "it is shared by every function in the node's process"


def _grant(permission: str, value: str = "true") -> str:
    return f"{permission} is not allowed: grant it with [permissions] {permission} = {value} in edge.toml"


def _prefixes(paths: Any) -> tuple[str, ...]:
    """Real paths with a trailing slash, for `_under` (which appends one to the path too)."""
    out = []
    for path in paths:
        real = os.path.realpath(path)
        out.append(real if real.endswith("/") else real + "/")
    return tuple(out)


def _under(path: str, prefixes: tuple[str, ...]) -> bool:
    path += "/"
    return any(path.startswith(prefix) for prefix in prefixes)


class _Guard:
    """One function's policy; `checks` maps the audit events it looks at to their checks."""

    def __init__(
        self,
        name: str,
        bundle: str,
        net: bool | tuple[str, ...],
        read: tuple[str, ...],
        write: tuple[str, ...],
        subprocess: bool,
        ctypes: bool,
        protected: tuple[str, ...],
        node_pids: tuple[int, ...],
        runtime_paths: tuple[str, ...],
        watchdog_thread: int,
    ) -> None:
        self.name = name
        self._bundle = _prefixes([bundle])
        self._protected = _prefixes(protected)
        # The system lists are real paths already (resolving them would cost each cold start
        # ~0.2 ms); a symlink among them is allowed only where its target is listed too.
        self._write = _prefixes(write) + tuple(path + "/" for path in SYSTEM_WRITE)
        self._read = _prefixes([*read, *write]) + tuple(path + "/" for path in SYSTEM_READ)
        # The standard library, the guest runtime and the interpreter's binary (platform reads it).
        self._runtime = _prefixes([*runtime_paths, sys.executable])
        self._node_pids = frozenset(node_pids)
        self._node_group = os.getpgid(0)
        self.subprocess = subprocess
        self.ctypes = ctypes
        self._watchdog_thread = watchdog_thread
        # Addresses of C functions the runtime calls through ctypes (see runtime_loaded_ctypes).
        self.runtime_calls: set[int] = set()
        self._net_any = net is True
        # (host, port) pairs; "*" host or None port match anything.
        self._net: list[tuple[str, int | None]] = []
        if not isinstance(net, bool):
            for target in net:
                host, _, port = target.rpartition(":")
                self._net.append((host.strip("[]").lower(), None if port == "*" else int(port)))
        self._resolved: dict[str, tuple[float, frozenset[str]]] = {}

    def refuse(self, action: str, reason: str) -> PermissionError:
        return PermissionError(f"function {self.name} may not {action}: {reason}")

    def refuse_import(self, module: str, reason: str) -> ModuleNotFoundError:
        # An ImportError, not a PermissionError: code that probes for an optional module falls
        # back (3.14's concurrent.futures, which asyncio imports, tries `import _interpreters`).
        message = f"function {self.name} may not import {module!r}: {reason}"
        return ModuleNotFoundError(message, name=module)

    def checks(self) -> dict[str, Any]:
        checks: dict[str, Any] = {
            "open": self.open,
            "os.listdir": self.listdir,
            "os.scandir": self.listdir,
            "import": self.import_,
            "gc.get_objects": self.always("call gc.get_objects", _INTERNALS),
            "gc.get_referrers": self.always("call gc.get_referrers", _INTERNALS),
            "socket.sethostname": self.always("set the host name", _PROCESS_WIDE),
            # 3.14: runs a script in another Python process (the node's main process, a sibling worker).
            "sys.remote_exec": self.always("call sys.remote_exec", "other processes are off limits"),
            "os.exec": self.always("call os.exec*", _ENDS_NODE),
            # The child of a process that has interpreters aborts (and a fork would copy the node).
            "os.fork": self.always("fork", _ENDS_NODE),
            "os.forkpty": self.always("fork", _ENDS_NODE),
            "os.kill": self.kill,
            "os.killpg": self.killpg,
            "signal.pthread_kill": self.pthread_kill,
            "os.chdir": self.always("change the working directory", _PROCESS_WIDE),
            "os.putenv": self.always("change the process environment", _PROCESS_WIDE),
            "os.unsetenv": self.always("change the process environment", _PROCESS_WIDE),
            "resource.setrlimit": self.always("change the process limits", _PROCESS_WIDE),
            "resource.prlimit": self.always("change the process limits", _PROCESS_WIDE),
        }
        for event in (
            "os.mkdir",
            "os.truncate",
            "os.utime",
            "os.chmod",
            "os.chown",
            "os.setxattr",
            "os.removexattr",
        ):
            checks[event] = self.write_first
        checks["os.remove"] = checks["os.rmdir"] = self.write_link
        checks["os.symlink"] = self.symlink
        checks["os.rename"] = self.rename
        checks["os.link"] = self.link
        checks["sqlite3.connect"] = self.sqlite
        if not self.subprocess:
            for event in ("subprocess.Popen", "os.system", "os.posix_spawn", "os.spawn"):
                checks[event] = self.always("start a process", _grant("subprocess"))
        if not self.ctypes:
            for event in _CTYPES_EVENTS:
                checks[event] = self.ctypes_call
            checks["ctypes.call_function"] = self.ctypes_call_function
        if not self._net_any:
            for event in ("socket.connect", "socket.sendto", "socket.sendmsg"):
                checks[event] = self.connect
            checks["socket.bind"] = self.bind
            for event in ("socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyaddr"):
                checks[event] = self.lookup
        else:
            # A Unix socket is a file: connecting to one needs `write`, whatever `net` says.
            for event in ("socket.connect", "socket.sendto", "socket.sendmsg", "socket.bind"):
                checks[event] = self.connect_unix
        return checks

    # Files

    def _resolve(self, path: Any, follow: bool = True) -> str | None:
        """The real absolute path, or None for a descriptor that is no file (socket, pipe, eventfd)."""
        if isinstance(path, int):
            try:
                target = os.readlink(f"/proc/self/fd/{path}")
            except OSError:
                return None
            return target if target.startswith("/") else None
        path = os.fsdecode(os.fspath(path))
        if follow:
            return os.path.realpath(path)
        head, tail = os.path.split(os.path.abspath(path))
        return os.path.join(os.path.realpath(head), tail)

    def check_path(self, given: Any, writing: bool, verb: str = "open", follow: bool = True) -> None:
        path = self._resolve(given, follow)
        if path is None:
            return
        shown = path if isinstance(given, int) else os.fsdecode(os.fspath(given))
        self.check_real(path, writing, f"{verb} {shown!r}")

    def check_real(self, path: str, writing: bool, shown: str) -> None:
        if path.startswith("/proc/"):
            parts = path.split("/")  # "", "proc", pid, [task, tid,] file
            process_file = parts[-1] in _PROCESS_FILES and parts[2].isdigit()
            if process_file and (len(parts) == 4 or (len(parts) == 6 and parts[3] == "task")):
                raise self.refuse(shown, _OFF_LIMITS_MEMORY)
        if _under(path, self._bundle):
            if writing:
                raise self.refuse(f"{shown} for writing", "the function's own bundle is read-only")
            return
        if _under(path, self._protected):
            raise self.refuse(shown, _OFF_LIMITS_DATA)
        if writing:
            if not _under(path, self._write):
                raise self.refuse(f"{shown} for writing", "not in [permissions] write")
            return
        if _under(path, self._read):
            return
        # The Python installation, minus the packages installed into it (the node's among them).
        if _under(path, self._runtime) and "/site-packages/" not in path and "/dist-packages/" not in path:
            return
        raise self.refuse(shown, "not in [permissions] read")

    def open(self, args: tuple[Any, ...]) -> None:
        path, mode, flags = args
        if isinstance(flags, int) and flags >= 0:
            writing = bool(flags & _WRITE_FLAGS)
        else:
            writing = isinstance(mode, str) and any(c in mode for c in "wax+")
        self.check_path(path, writing)

    def listdir(self, args: tuple[Any, ...]) -> None:
        path = args[0]
        self.check_path("." if path is None else path, False, "list")

    def write_first(self, args: tuple[Any, ...]) -> None:
        self.check_path(args[0], True, "change")

    def write_link(self, args: tuple[Any, ...]) -> None:
        self.check_path(args[0], True, "remove", follow=False)

    def symlink(self, args: tuple[Any, ...]) -> None:
        self.check_path(args[1], True, "create", follow=False)

    def rename(self, args: tuple[Any, ...]) -> None:
        self.check_path(args[0], True, "rename", follow=False)
        self.check_path(args[1], True, "rename to", follow=False)

    def link(self, args: tuple[Any, ...]) -> None:
        # A hard link to a file makes it readable under a new name: the source must be readable.
        self.check_path(args[0], False, "link")
        self.check_path(args[1], True, "link to", follow=False)

    def sqlite(self, args: tuple[Any, ...]) -> None:
        # SQLite opens its files in C (no `open` event): check the database path here.
        database = args[0]
        if isinstance(database, bytes):
            database = os.fsdecode(database)
        if not isinstance(database, str | os.PathLike):
            return
        database = os.fspath(database)
        if database in ("", ":memory:") or database.startswith("file::memory:"):
            return
        read_only = False
        if database.startswith("file:"):
            database, _, query = database[5:].partition("?")
            read_only = "mode=ro" in query
        self.check_path(database, not read_only)

    # Imports and the runtime's objects

    def import_(self, args: tuple[Any, ...]) -> None:
        module = args[0]
        top = module.partition(".")[0]
        if top in _INTERNAL:
            raise self.refuse_import(module, _INTERNALS)
        if top in _CTYPES and not self.ctypes and _thread.get_ident() != self._watchdog_thread:
            raise self.refuse_import(module, _grant("ctypes"))

    # The node's process

    def always(self, action: str, reason: str) -> Any:
        def check(args: tuple[Any, ...]) -> None:
            raise self.refuse(action, reason)

        return check

    def kill(self, args: tuple[Any, ...]) -> None:
        pid, signal = args
        if signal and (pid in self._node_pids or pid in (0, -1) or -pid == self._node_group):
            raise self.refuse(f"send signal {signal} to process {pid}", _ENDS_NODE)

    def killpg(self, args: tuple[Any, ...]) -> None:
        group, signal = args
        if signal and group in (0, self._node_group):
            raise self.refuse(f"send signal {signal} to process group {group}", _ENDS_NODE)

    def pthread_kill(self, args: tuple[Any, ...]) -> None:
        if args[1]:
            raise self.refuse(f"send signal {args[1]} to a thread", "every thread here is the node's")

    def ctypes_call_function(self, args: tuple[Any, ...]) -> None:
        if args[0] not in self.runtime_calls:
            self.ctypes_call(args)

    def ctypes_call(self, args: tuple[Any, ...]) -> None:
        # The watchdog finds PyThreadState_SetAsyncExc through ctypes on its own thread.
        if _thread.get_ident() != self._watchdog_thread:
            raise self.refuse("use ctypes", _grant("ctypes"))

    # Network

    def connect_unix(self, args: tuple[Any, ...]) -> None:
        address = args[1]
        if isinstance(address, str | bytes) and address and address[0] not in ("\0", 0):
            self.check_path(address, True, "connect to")

    def connect(self, args: tuple[Any, ...]) -> None:
        address = args[1]
        if address is None:  # sendmsg on a connected socket: checked at connect
            return
        if isinstance(address, str | bytes) and address and address[0] not in ("\0", 0):
            self.check_path(address, True, "connect to")
            return
        if isinstance(address, tuple) and len(address) >= 2 and isinstance(address[0], str):
            host, port = address[0], address[1]
            shown = f"'[{host}]:{port}'" if ":" in host else f"'{host}:{port}'"
            if self._net and self._allowed(host.lower(), port):
                return
        else:
            shown = repr(address)
        raise self.refuse(f"connect to {shown}", self._net_reason())

    def bind(self, args: tuple[Any, ...]) -> None:
        address = args[1]
        if isinstance(address, str | bytes) and address and address[0] not in ("\0", 0):
            self.check_path(address, True, "bind to")
            return
        raise self.refuse(f"listen on {address!r}", "only [permissions] net = true allows it")

    def _net_reason(self) -> str:
        if self._net:
            return "not in [permissions] net"
        return 'network access is off: grant it with [permissions] net = true or ["host:port"] in edge.toml'

    def lookup(self, args: tuple[Any, ...]) -> None:
        host = args[0]
        if host is None:
            return
        if isinstance(host, bytes):
            host = host.decode("ascii", "replace")
        port = args[1] if len(args) > 1 else None
        if isinstance(port, str) and port.isdigit():
            port = int(port)
        host = str(host).lower()
        if _is_address(host):  # no lookup happens: the connect that follows is checked
            return
        for allowed_host, allowed_port in self._net:
            if allowed_host in ("*", host) and (
                allowed_port is None or not isinstance(port, int) or port == allowed_port
            ):
                return
        raise self.refuse(f"look up {host!r}", self._net_reason())

    def _allowed(self, ip: str, port: int) -> bool:
        for allowed_host, allowed_port in self._net:
            if allowed_port is not None and port != allowed_port:
                continue
            if allowed_host in ("*", ip) or ip in self._addresses(allowed_host):
                return True
        return False

    def _addresses(self, host: str) -> frozenset[str]:
        """The addresses a listed host name resolves to, looked up again after a minute."""
        import time

        now = time.monotonic()
        cached = self._resolved.get(host)
        if cached is not None and cached[0] > now:
            return cached[1]
        import _socket

        try:
            found = frozenset(str(info[4][0]).lower() for info in _socket.getaddrinfo(host, None))
        except OSError:
            found = frozenset()
        self._resolved[host] = (now + 60.0, found)
        return found


def _is_address(host: str) -> bool:
    import _socket

    for family in (_socket.AF_INET, _socket.AF_INET6):
        try:
            _socket.inet_pton(family, host)
        except OSError:
            continue
        return True
    return False


class _Finder:
    """First on sys.meta_path: refuses the node's packages unless the bundle has a module of that
    name, and disarms `_posixsubprocess.fork_exec` whenever that module loads (unless granted)."""

    def __init__(self, guard: _Guard) -> None:
        self._guard = guard

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        top = name.partition(".")[0]
        if top in _INTERNAL:
            raise self._guard.refuse_import(name, _INTERNALS)
        if name == "_posixsubprocess" and not self._guard.subprocess:
            return self._disarmed(name)
        if top not in _NODE_PACKAGES or path is not None:
            return None
        from importlib.machinery import PathFinder

        spec = PathFinder.find_spec(name)
        origin = spec is not None and (spec.origin or next(iter(spec.submodule_search_locations or ()), ""))
        if origin and not _under(os.path.realpath(origin), self._guard._bundle):
            raise self._guard.refuse_import(name, _INTERNALS)
        return None

    def _disarmed(self, name: str) -> Any:
        from importlib.machinery import BuiltinImporter, PathFinder

        spec = BuiltinImporter.find_spec(name) or PathFinder.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        loader, guard = spec.loader, self._guard

        class Disarming:
            def create_module(self, spec: Any) -> Any:
                return loader.create_module(spec)

            def exec_module(self, module: Any) -> None:
                loader.exec_module(module)
                _disarm(module, guard)

        spec.loader = Disarming()
        return spec


def _disarm(posixsubprocess: Any, guard: _Guard) -> None:
    """subprocess.Popen raises an event, but the fork_exec under it (also used by multiprocessing's
    spawnv_passfds) starts a process without one: replace it where it is (unless granted)."""
    fork_exec = _refusing(guard, "start a process", _grant("subprocess"))
    posixsubprocess.fork_exec = fork_exec
    subprocess = sys.modules.get("subprocess")
    if subprocess is not None and hasattr(subprocess, "_fork_exec"):
        subprocess._fork_exec = fork_exec


# What a descriptor number may reach (os.read and friends raise no audit event in 3.13).
_FD_REASON = (
    "it is not a file this function may open nor a pipe or eventfd it made (the worker's other"
    " descriptors carry other functions' requests and secrets)"
)
# (close and fsync judge a file as reading: closing a file the function may read is its own business)
_FD_READING = ("read", "readv", "pread", "preadv", "close", "fsync", "fdatasync")
_FD_WRITING = ("write", "writev", "pwrite", "pwritev")
# (name, which arguments are descriptors read from, which written to)
_FD_PAIRS = (("sendfile", (1,), (0,)), ("splice", (0,), (1,)), ("copy_file_range", (0,), (1,)))
_FD_MAKERS = ("pipe", "pipe2", "eventfd", "openpty")


def _guard_descriptors(guard: _Guard, posix: Any) -> None:
    """Replace the calls that take a descriptor number in this interpreter's os and posix
    modules: a file is judged by its path as `open` would be; anything else (a pipe, socket,
    eventfd) only if this interpreter made it (os.pipe, os.eventfd, a dup of one). So a function
    cannot read or write the worker's other isolates' pipes, the node's sockets or its stdio by
    number. (Socket objects' methods and the runtime's own channel do not come here.)"""
    made: set[int] = set()

    def allowed(fd: Any, writing: bool, call: str) -> None:
        if not isinstance(fd, int) or fd in made:
            return
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            return  # not open: the call itself fails
        if target.startswith("/"):
            guard.check_real(target, writing, f"{call} descriptor {fd} ({target!r})")
            return
        raise guard.refuse(f"{call} descriptor {fd} ({target})", _FD_REASON)

    def checked(name: str, reading: tuple[int, ...], writing: tuple[int, ...]) -> Any:
        original = getattr(posix, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            for index in reading:
                if index < len(args):
                    allowed(args[index], False, name)
            for index in writing:
                if index < len(args):
                    allowed(args[index], True, name)
            return original(*args, **kwargs)

        return call

    def making(name: str) -> Any:
        original = getattr(posix, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            result = original(*args, **kwargs)
            made.update(result if isinstance(result, tuple) else (result,))
            return result

        return call

    def dup(fd: int, *args: Any) -> int:
        allowed(fd, False, "dup")
        new: int = posix.dup(fd, *args)
        if fd in made:
            made.add(new)
        return new

    def dup2(fd: int, fd2: int, *args: Any) -> int:
        allowed(fd, False, "dup2")
        allowed(fd2, True, "dup2")
        result: int = posix.dup2(fd, fd2, *args)
        made.discard(fd2)
        if fd in made:
            made.add(fd2)
        return result

    replaced: dict[str, Any] = {"dup": dup, "dup2": dup2}
    for name in _FD_READING:
        replaced[name] = checked(name, (0,), ())
    for name in _FD_WRITING:
        replaced[name] = checked(name, (), (0,))
    for name, reading, writing in _FD_PAIRS:
        replaced[name] = checked(name, reading, writing)
    for name in _FD_MAKERS:
        replaced[name] = making(name)
    replaced["closerange"] = _refusing(guard, "call os.closerange", _FD_REASON)
    for name, function in replaced.items():
        if hasattr(posix, name):
            setattr(posix, name, function)
            setattr(os, name, function)


def _refusing(guard: _Guard, action: str, reason: str = _ENDS_NODE) -> Any:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise guard.refuse(action, reason)

    return refuse


_guard: _Guard | None = None
# Modules taken out of sys.modules, kept alive (their module state stays as the runtime uses it).
_kept: list[Any] = []


def install(
    name: str,
    bundle: str,
    permissions: tuple[Any, ...],
    protected: tuple[str, ...],
    node_pids: tuple[int, ...],
    runtime_paths: tuple[str, ...],
    watchdog_thread: int,
) -> None:
    """Install the hook for function `name`; `permissions` is (net, read, write, subprocess, ctypes)."""
    global _guard
    net, read, write, subprocess, ctypes = permissions
    guard = _guard = _Guard(
        name,
        bundle,
        net,
        read,
        write,
        subprocess,
        ctypes,
        protected,
        node_pids,
        runtime_paths,
        watchdog_thread,
    )
    checks = guard.checks().get

    def hook(event: str, args: tuple[Any, ...]) -> None:
        check = checks(event)
        if check is not None:
            check(args)

    # A read-only bundle cannot take bytecode: do not try (each try costs a refused mkdir).
    sys.dont_write_bytecode = True
    sys.meta_path.insert(0, _Finder(guard))  # type: ignore[arg-type]
    import posix

    # Neither raises an audit event (3.13): replace them in this interpreter's os and posix modules.
    os._exit = posix._exit = _refusing(guard, "call os._exit")
    os.abort = posix.abort = _refusing(guard, "call os.abort")
    _guard_descriptors(guard, posix)
    if not subprocess and "_posixsubprocess" in sys.modules:  # loaded with asyncio, say
        _disarm(sys.modules["_posixsubprocess"], guard)
    sys.addaudithook(hook)


def conceal() -> None:
    """Take the runtime's own modules out of the function's reach (call once, before user code)."""
    _forget(_INTERNAL - {"posix"} | (_CTYPES if _guard is not None and not _guard.ctypes else set()))
    main = sys.modules.get("__main__")
    if main is not None:  # the boot code's names: the runtime module, queue ids, ...
        for key in [key for key in vars(main) if not key.startswith("__")]:
            _kept.append(vars(main).pop(key))


def _forget(packages: Any) -> None:
    """Take these top-level modules and their submodules out of sys.modules (they stay alive)."""
    modules = sys.modules
    for name in [name for name in modules if name.partition(".")[0] in packages]:
        _kept.append(modules.pop(name))


def watchdog_moved(thread: int) -> None:
    """The watchdog runs on a new thread (an interpreter isolate starts one per activation)."""
    if _guard is not None:
        _guard._watchdog_thread = thread


def runtime_loaded_ctypes(function: Any) -> None:
    """The watchdog loaded ctypes and `function` (PyThreadState_SetAsyncExc) on its own thread.

    Calls of that one function stay allowed from any thread (3.14 raises `ctypes.call_function`
    for every foreign call; the serving thread withdraws interrupts with it), and ctypes leaves
    sys.modules again unless granted.
    """
    guard = _guard
    if guard is None:
        return
    import ctypes

    address = ctypes.cast(function, ctypes.c_void_p).value
    if address is not None:
        guard.runtime_calls.add(address)
    if not guard.ctypes:
        _forget(_CTYPES)
