"""Confinement of a process isolate, applied by the child to itself (see _edge_child).

As root: a private mount namespace whose view holds what the function needs and none of the
node's protected directories (an empty tmpfs over each directory in the way, the needed paths
bound back at the same places; `[permissions] write` directories idmapped so the function's uid
owns them there), a private /tmp and a procfs that shows only its own processes; then rlimits,
its own uid and gid. Always: `PR_SET_NO_NEW_PRIVS`, a Landlock ruleset with holes at the
protected paths (through ctypes: the syscalls are 444-446 on every architecture, the structs are
the kernel's uapi `linux/landlock.h`) and a seccomp filter (through libseccomp, which resolves
syscall names). Standard library only."""

from __future__ import annotations

import os
import signal
import struct
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["confine", "load_libc", "parent_death_signal"]

_PR_SET_PDEATHSIG = 1
_PR_SET_NO_NEW_PRIVS = 38

_MS_NOSUID = 2
_MS_NODEV = 4
_MS_NOEXEC = 8
_MS_BIND = 4096
_MS_REC = 16384
_MS_PRIVATE = 1 << 18

# Idmapped mounts (open_tree, mount_setattr, move_mount: the same numbers on every architecture).
_SYS_OPEN_TREE, _SYS_MOVE_MOUNT, _SYS_MOUNT_SETATTR = 428, 429, 442
_AT_FDCWD = -100
_AT_EMPTY_PATH = 0x1000
_AT_RECURSIVE = 0x8000
_OPEN_TREE_CLONE = 1
_OPEN_TREE_CLOEXEC = os.O_CLOEXEC
_MOVE_MOUNT_F_EMPTY_PATH = 4
_MOUNT_ATTR_IDMAP = 0x00100000

# Landlock (include/uapi/linux/landlock.h).
_SYS_CREATE_RULESET, _SYS_ADD_RULE, _SYS_RESTRICT_SELF = 444, 445, 446
_RULESET_VERSION = 1
_RULE_PATH_BENEATH, _RULE_NET_PORT = 1, 2
_FS_EXECUTE = 1 << 0
_FS_WRITE_FILE = 1 << 1
_FS_READ_FILE = 1 << 2
_FS_READ_DIR = 1 << 3
_FS_MAKE_CHAR = 1 << 6
_FS_MAKE_BLOCK = 1 << 11
_FS_REFER = 1 << 13
_FS_TRUNCATE = 1 << 14
_FS_IOCTL_DEV = 1 << 15
_FS_FILE_ONLY = _FS_EXECUTE | _FS_WRITE_FILE | _FS_READ_FILE | _FS_TRUNCATE | _FS_IOCTL_DEV
_NET_BIND_TCP, _NET_CONNECT_TCP = 1, 2
_SCOPE_ABSTRACT_UNIX_SOCKET, _SCOPE_SIGNAL = 1, 2

# Read-only for every function: shared libraries, the few /etc files libc and ssl read, CPU facts.
_SYSTEM_READ = (
    "/usr",
    "/lib",
    "/lib64",
    "/bin",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/localtime",
    "/etc/hosts",
    "/etc/resolv.conf",
    "/etc/nsswitch.conf",
    "/etc/host.conf",
    "/etc/gai.conf",
    "/etc/services",
    "/etc/protocols",
    "/etc/ssl",
    "/etc/ca-certificates",
    "/etc/passwd",
    "/etc/group",
    "/proc/cpuinfo",
    "/proc/meminfo",
    "/proc/stat",
    "/proc/loadavg",
    "/proc/uptime",
    "/proc/version",
    "/proc/sys/vm/overcommit_memory",
    "/sys/devices/system/cpu",
    "/dev/urandom",
    "/dev/random",
    "/dev/zero",
)
_SYSTEM_WRITE = ("/dev/null",)
# Of its own /proc/<pid>: not all of it. net/ (also under task/) is the node's network namespace,
# whose socket tables list every client connection; mountinfo names the host's paths.
_OWN_PROC = ("status", "stat", "statm", "limits", "fd", "maps", "cmdline", "comm")


def load_libc() -> Any:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    return libc


def _check(result: int, what: str) -> int:
    if result < 0:
        import ctypes

        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")
    return result


def _prctl(libc: Any, option: int, value: int) -> None:
    _check(libc.prctl(option, value, 0, 0, 0), f"prctl({option})")


def parent_death_signal(libc: Any, parent: int) -> None:
    _prctl(libc, _PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before the signal was armed
        os._exit(0)


def _within(path: str, directory: str) -> bool:
    return path == directory or path.startswith(directory.rstrip("/") + "/")


def _beside(grants: list[str], protected: list[str]) -> list[str]:
    """`grants` with holes where the protected paths are: a grant that holds one is replaced by
    what sits beside it, level by level (a grant of a protected path itself stays: it is explicit).

    Landlock only adds access, so a grant of `/` would reach the node's token file however the
    mount view looks; and a node that is not root has no mount view or uid of its own to fall
    back on. Entries made later under a punched directory are not granted."""
    result: list[str] = []
    for grant in grants:
        real = os.path.realpath(grant)
        inside = [path for path in protected if path != real and _within(path, real)]
        if not inside:
            result.append(grant)
            continue
        try:
            entries = os.listdir(real)
        except OSError:
            continue
        for entry in entries:
            child = os.path.join(real, entry)
            if child not in inside:
                result += _beside([child], inside)
    return result


def _blocking_ancestor(path: str) -> str | None:
    """The topmost directory on the way to `path` that other users cannot traverse, if any."""
    parts = path.strip("/").split("/")
    for depth in range(1, len(parts)):
        ancestor = "/" + "/".join(parts[:depth])
        try:
            mode = os.stat(ancestor).st_mode
        except OSError:
            return None
        if not mode & 0o001:
            return ancestor
    return None


def _mount(
    libc: Any, source: str | None, target: str, fstype: str | None, flags: int, data: str = ""
) -> None:
    result = libc.mount(
        source.encode() if source else None,
        target.encode(),
        fstype.encode() if fstype else None,
        flags,
        data.encode() if data else None,
    )
    _check(result, f"mount {source or fstype} on {target}")


def _mask(libc: Any, directory: str, needed: dict[str, int], options: str = "mode=0755,size=64k") -> None:
    """An empty tmpfs over `directory`, with the needed paths under it bound back in place."""
    _mount(libc, "tmpfs", directory, "tmpfs", _MS_NOSUID | _MS_NODEV, options)
    inside = sorted(path for path in needed if _within(path, directory) and path != directory)
    bound: list[str] = []
    for path in inside:
        if any(_within(path, outer) for outer in bound):
            continue
        if os.path.isdir(f"/proc/self/fd/{needed[path]}"):
            os.makedirs(path, exist_ok=True)
        else:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o644))
        _mount(libc, f"/proc/self/fd/{needed[path]}", path, None, _MS_BIND | _MS_REC)
        bound.append(path)


def _user_namespace(uid: int) -> int:
    """A user namespace whose root is `uid` on the host; returns its fd.

    A mount idmapped with it shows what the host's root owns as owned by `uid`, and stores what
    `uid` creates there as root's."""
    ready_read, ready_write = os.pipe()
    hold_read, hold_write = os.pipe()
    # A helper made with fork: this process has one interpreter and no other thread yet.
    pid = os.fork()
    if pid == 0:
        try:
            os.close(ready_read)
            os.close(hold_write)
            # Not left behind if the child is killed while it waits (fork cleared the signal).
            parent_death_signal(load_libc(), os.getppid())
            os.unshare(os.CLONE_NEWUSER)
            os.write(ready_write, b"1")
            os.read(hold_read, 1)
        finally:
            os._exit(0)
    os.close(ready_write)
    os.close(hold_read)
    try:
        if os.read(ready_read, 1) != b"1":
            raise OSError("cannot make a user namespace")
        for name in ("uid_map", "gid_map"):
            with open(f"/proc/{pid}/{name}", "w") as file:
                file.write(f"0 {uid} 1\n")
        return os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        os.close(ready_read)
        os.close(hold_write)
        os.waitpid(pid, 0)


def _own_writable(libc: Any, paths: list[str], uid: int) -> list[str]:
    """Remount each `[permissions] write` directory idmapped: what the host's root owns there, the
    function's uid owns in its view (new files are root's on disk). Returns notes on failures."""
    import ctypes

    notes: list[str] = []
    targets = [path for path in paths if path != "/" and os.path.exists(path)]
    if not targets:
        return notes
    userns = _user_namespace(uid)
    try:
        attr = struct.pack("=QQQQ", _MOUNT_ATTR_IDMAP, 0, 0, userns)
        for path in targets:
            encoded = path.encode()
            try:
                tree = _check(
                    libc.syscall(
                        _SYS_OPEN_TREE,
                        ctypes.c_long(_AT_FDCWD),
                        encoded,
                        _OPEN_TREE_CLONE | _OPEN_TREE_CLOEXEC | _AT_RECURSIVE,
                    ),
                    f"open_tree {path}",
                )
                try:
                    flags = _AT_EMPTY_PATH | _AT_RECURSIVE
                    _check(libc.syscall(_SYS_MOUNT_SETATTR, tree, b"", flags, attr, len(attr)), "idmap")
                    where = ctypes.c_long(_AT_FDCWD)
                    moved = libc.syscall(_SYS_MOVE_MOUNT, tree, b"", where, encoded, _MOVE_MOUNT_F_EMPTY_PATH)
                    _check(moved, "move_mount")
                finally:
                    os.close(tree)
            except OSError as exc:
                notes.append(
                    f"write grant {path}: ownership not mapped ({exc}); uid {uid} needs write access"
                )
    finally:
        os.close(userns)
    return notes


def _build_view(
    libc: Any, needed_paths: list[str], protected: list[str], tmp_mb: int, writable: list[str], uid: int
) -> list[str]:
    """A private mount namespace where the uid reaches what it needs and no protected directory.

    Returns notes for the host's log."""
    os.unshare(os.CLONE_NEWNS)
    _mount(libc, None, "/", None, _MS_REC | _MS_PRIVATE)
    # Opened in the new namespace: a bind's source must be a mount of the caller's namespace.
    needed: dict[str, int] = {}
    for path in needed_paths:
        if path not in needed and os.path.exists(path):
            needed[path] = os.open(path, os.O_PATH | os.O_CLOEXEC)
    try:
        # A /tmp of its own (its pages count against the memory limit); what it needs from the
        # host's /tmp is bound back. Then the untraversable directories on the way to the rest.
        _mask(libc, "/tmp", needed, f"mode=1777,size={tmp_mb}m")
        blocking = {found for path in needed if (found := _blocking_ancestor(path)) is not None}
        for directory in sorted(blocking):
            outer = [other for other in blocking if other != directory]
            if not _within(directory, "/tmp") and not any(_within(directory, other) for other in outer):
                _mask(libc, directory, needed)
        for directory in sorted(protected):
            if os.path.isdir(directory):
                _mask(libc, directory, needed)
        notes = _own_writable(libc, writable, uid)
        # A procfs of its own where other users' processes are invisible (the node's included).
        _mount(libc, "proc", "/proc", "proc", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC, "hidepid=invisible")
    finally:
        for fd in needed.values():
            os.close(fd)
    return notes


def _landlock(libc: Any, config: dict[str, Any], readable: list[str], writable: list[str]) -> int:
    """Restrict this (only) thread and its future children; returns the Landlock ABI used."""
    import ctypes

    abi = libc.syscall(_SYS_CREATE_RULESET, None, 0, _RULESET_VERSION)
    if abi < 1:
        raise OSError(ctypes.get_errno(), "Landlock is not available in this kernel")
    handled_fs = (1 << 13) - 1
    if abi >= 2:
        handled_fs |= _FS_REFER
    if abi >= 3:
        handled_fs |= _FS_TRUNCATE
    if abi >= 5:
        handled_fs |= _FS_IOCTL_DEV
    # A function never listens (bind is refused whatever `net` says); it connects where `net`
    # allows: everywhere, nowhere, or to the listed ports on any host (Landlock has no host rules).
    handled_net = _NET_BIND_TCP if abi >= 4 else 0
    ports: list[int] = []
    net = config["net"]
    if net is not True and abi >= 4:
        handled_net |= _NET_CONNECT_TCP
        for target in net or ():
            port = target.rpartition(":")[2]
            if port == "*":
                handled_net = _NET_BIND_TCP
                break
            ports.append(int(port))
    scoped = _SCOPE_ABSTRACT_UNIX_SOCKET | _SCOPE_SIGNAL if abi >= 6 else 0
    attr = struct.pack("=QQQ", handled_fs, handled_net, scoped)
    size = 24 if abi >= 6 else 16 if abi >= 4 else 8
    ruleset = _check(
        libc.syscall(_SYS_CREATE_RULESET, attr[:size], ctypes.c_size_t(size), 0), "landlock_create_ruleset"
    )
    try:
        execute = _FS_EXECUTE if config["subprocess"] else 0
        read = _FS_READ_FILE | _FS_READ_DIR | execute
        write = handled_fs & ~(_FS_MAKE_CHAR | _FS_MAKE_BLOCK | _FS_EXECUTE) | execute
        for paths, access in ((readable, read), (writable, write)):
            for path in paths:
                try:
                    fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
                except OSError:
                    continue  # a path that does not exist grants nothing
                try:
                    allowed = access if os.path.isdir(path) else access & _FS_FILE_ONLY
                    rule = struct.pack("=Qi", allowed & handled_fs, fd)
                    _check(libc.syscall(_SYS_ADD_RULE, ruleset, _RULE_PATH_BENEATH, rule, 0), path)
                finally:
                    os.close(fd)
        for port in ports:
            rule = struct.pack("=QQ", _NET_CONNECT_TCP, port)
            _check(libc.syscall(_SYS_ADD_RULE, ruleset, _RULE_NET_PORT, rule, 0), f"port {port}")
        _check(libc.syscall(_SYS_RESTRICT_SELF, ruleset, 0), "landlock_restrict_self")
    finally:
        os.close(ruleset)
    return int(abi)


# Refused with EPERM by the syscall filter: new namespaces (an unprivileged user namespace hands
# out capabilities over a larger part of the kernel), and interfaces a function has no use for
# that are frequent sources of kernel bugs. clone3 answers ENOSYS (its flags are out of a
# filter's reach), so libc falls back to clone, whose namespace flags are checked.
_DENIED_SYSCALLS = (
    "unshare",
    "setns",
    "mount",
    "umount2",
    "pivot_root",
    "chroot",
    "fsopen",
    "fsmount",
    "fsconfig",
    "fspick",
    "open_tree",
    "move_mount",
    "mount_setattr",
    "bpf",
    "userfaultfd",
    "perf_event_open",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "keyctl",
    "add_key",
    "request_key",
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "open_by_handle_at",
)
_NAMESPACE_FLAGS = (
    os.CLONE_NEWNS,
    os.CLONE_NEWCGROUP,
    os.CLONE_NEWUTS,
    os.CLONE_NEWIPC,
    os.CLONE_NEWUSER,
    os.CLONE_NEWPID,
    os.CLONE_NEWNET,
)
_SCMP_ACT_ALLOW = 0x7FFF0000
_SCMP_ACT_ERRNO = 0x00050000
_SCMP_CMP_MASKED_EQ = 7


def _syscall_filter() -> str:
    """Load the seccomp filter through libseccomp (names resolved by it, no table of numbers here).

    Returns a note when libseccomp is missing (the child then runs without a filter)."""
    import ctypes
    import errno

    try:
        seccomp = ctypes.CDLL("libseccomp.so.2")
    except OSError:
        return "libseccomp.so.2 is not installed: no syscall filter"
    seccomp.seccomp_init.restype = ctypes.c_void_p
    seccomp.seccomp_init.argtypes = [ctypes.c_uint32]
    seccomp.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    seccomp.seccomp_rule_add_array.argtypes = [
        ctypes.c_void_p,
        ctypes.c_uint32,
        ctypes.c_int,
        ctypes.c_uint,
        ctypes.c_void_p,
    ]
    seccomp.seccomp_load.argtypes = [ctypes.c_void_p]
    seccomp.seccomp_release.argtypes = [ctypes.c_void_p]

    def check(result: int, what: str) -> None:
        if result < 0:  # libseccomp returns -errno
            raise OSError(-result, f"seccomp {what}: {os.strerror(-result)}")

    def resolve(name: str) -> int:
        return int(seccomp.seccomp_syscall_resolve_name(name.encode()))

    context = seccomp.seccomp_init(_SCMP_ACT_ALLOW)
    if not context:
        raise OSError(errno.ENOMEM, "seccomp_init failed")
    try:
        refuse = _SCMP_ACT_ERRNO | errno.EPERM
        for name in _DENIED_SYSCALLS:
            number = resolve(name)
            if number != -1:  # -1: not a syscall of this architecture
                check(seccomp.seccomp_rule_add_array(context, refuse, number, 0, None), name)
        clone3 = resolve("clone3")
        if clone3 != -1:
            check(
                seccomp.seccomp_rule_add_array(context, _SCMP_ACT_ERRNO | errno.ENOSYS, clone3, 0, None),
                "clone3",
            )
        clone = resolve("clone")
        for flag in _NAMESPACE_FLAGS:
            # struct scmp_arg_cmp: argument 0 (the flags), op, datum_a (mask), datum_b (value).
            compare = struct.pack("=IiQQ", 0, _SCMP_CMP_MASKED_EQ, flag, flag)
            check(seccomp.seccomp_rule_add_array(context, refuse, clone, 1, compare), "clone")
        check(seccomp.seccomp_load(context), "load")
    finally:
        seccomp.seccomp_release(context)
    return ""


def _virtual_size() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def confine(config: dict[str, Any], parent: int) -> list[str]:
    """Confine this process as the module docstring says; returns notes for the host's log."""
    import resource

    libc = load_libc()
    notes: list[str] = []
    bundle = config["bundle"]
    prefix = os.path.realpath(sys.base_prefix)
    guest = os.path.dirname(os.path.abspath(__file__))
    own = f"/proc/{os.getpid()}"
    readable = [
        bundle,
        prefix,
        guest,
        *_SYSTEM_READ,
        *(f"{own}/{entry}" for entry in _OWN_PROC),
        *config["read"],
    ]
    writable = [*_SYSTEM_WRITE, *config["write"]]
    root = os.geteuid() == 0
    if root:
        needed = [prefix, guest, bundle, *config["read"], *config["write"]]
        notes += _build_view(
            libc, needed, config["protected"], config["memory_mb"], config["write"], config["uid"]
        )
        writable.append("/tmp")
    memory = config["memory_mb"] << 20
    if not config["cgroup"]:
        # Leave room for what the interpreter has mapped already (libraries, arenas, stacks).
        limit = _virtual_size() + memory
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    cpu = config["cpu_s"]
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    # A crash leaves no core file (it would hold the function's memory, requests included).
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    files = config["nofile"]
    resource.setrlimit(resource.RLIMIT_NOFILE, (files, files))
    if root:
        # Threads count too: leave room for a handler's thread pool (numpy, asyncio's executor).
        tasks = config["nproc"]
        resource.setrlimit(resource.RLIMIT_NPROC, (tasks, tasks))
        uid = config["uid"]
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
        parent_death_signal(libc, parent)
    else:
        notes.append("the node is not root: the child keeps the node's uid (Landlock and rlimits apply)")
    _prctl(libc, _PR_SET_NO_NEW_PRIVS, 1)
    # Only what exists here: as root, the mount view has hidden the rest (a private /tmp).
    protected = [real for path in config["protected"] if os.path.lexists(real := os.path.realpath(path))]
    readable, writable = _beside(readable, protected), _beside(writable, protected)
    abi = _landlock(libc, config, readable, writable)
    note = _syscall_filter()
    if note:
        notes.append(note)
    if abi < 4 and config["net"] is not True:
        notes.append(f"Landlock ABI {abi} cannot restrict TCP: `net` is not enforced")
    return notes
