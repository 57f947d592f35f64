"""Memory cgroups (v1) for the process backend's children, nested in the node's own memory cgroup.

Layout: `<the node's memory cgroup>/edge-<worker pid>/child-<n>`, one group per child. A child
joins its group itself while it is blank (moving a task costs 10-20 ms, too much for a cold
start); the limit is written when a function is assigned. Groups are removed when their child
ends; groups left by a worker that was killed outright are removed by the next one.
"""

from __future__ import annotations

import contextlib
import logging
import os

__all__ = ["MemoryCgroups", "own_memory_cgroup"]

log = logging.getLogger("edge.isolates")

_ROOT = "/sys/fs/cgroup/memory"


def own_memory_cgroup() -> str:
    """This process's v1 memory cgroup directory when it may make groups there, else ''."""
    if os.geteuid() != 0:
        return ""
    try:
        with open("/proc/self/cgroup") as lines:
            for line in lines:
                _, controllers, path = line.rstrip("\n").split(":", 2)
                if "memory" in controllers.split(","):
                    directory = _ROOT + path.rstrip("/")
                    return directory if os.access(directory, os.W_OK) else ""
    except OSError:
        pass
    return ""


class MemoryCgroups:
    """Makes, limits and removes the children's groups under `parent` ('' turns them off)."""

    def __init__(self, parent: str) -> None:
        self._parent = parent
        self._base = ""
        self._count = 0
        self._closed = False

    def new(self) -> str:
        """A group for a new child, unlimited until `limit` ('' when there are none)."""
        if not self._parent or self._closed:
            return ""
        try:
            if not self._base:
                _remove_stale(self._parent)
                self._base = os.path.join(self._parent, f"edge-{os.getpid()}")
                os.makedirs(self._base, exist_ok=True)
            self._count += 1
            directory = os.path.join(self._base, f"child-{self._count}")
            os.mkdir(directory)
        except OSError as exc:
            log.warning("process isolation: cannot make a memory cgroup (%s); using RLIMIT_AS", exc)
            self._parent = ""
            return ""
        return directory

    def limit(self, directory: str, memory_mb: int) -> bool:
        """Limit memory and memory+swap of `directory`; False when that failed (use RLIMIT_AS)."""
        value = str(memory_mb << 20)
        try:
            # From unlimited: memory first, then memory+swap (which may never be the lower one).
            _write(os.path.join(directory, "memory.limit_in_bytes"), value)
            swap = os.path.join(directory, "memory.memsw.limit_in_bytes")
            if os.path.exists(swap):
                _write(swap, value)
        except OSError as exc:
            log.warning("process isolation: cannot limit %s (%s); using RLIMIT_AS", directory, exc)
            return False
        return True

    def remove(self, directory: str) -> bool:
        """Remove the group of an ended child; returns True if the kernel killed it for memory."""
        killed = False
        with contextlib.suppress(OSError), open(os.path.join(directory, "memory.oom_control")) as control:
            for line in control:
                name, _, value = line.partition(" ")
                killed = killed or (name == "oom_kill" and value.strip() != "0")
        with contextlib.suppress(OSError):
            os.rmdir(directory)
        if self._closed:
            self._remove_base()
        return killed

    def close(self) -> None:
        """No more groups; the base goes once the last child's group is removed."""
        self._closed = True
        self._remove_base()

    def _remove_base(self) -> None:
        if self._base:
            with contextlib.suppress(OSError):  # not empty yet: the last `remove` does it
                os.rmdir(self._base)


def _remove_stale(parent: str) -> None:
    """Remove the empty groups a worker that was killed outright left behind."""
    for entry in os.scandir(parent):
        name = entry.name
        if name.startswith("edge-") and name[5:].isdigit() and not os.path.exists(f"/proc/{name[5:]}"):
            with contextlib.suppress(OSError):  # still populated: leave it
                for child in os.scandir(entry.path):
                    if child.is_dir():
                        os.rmdir(child.path)
                os.rmdir(entry.path)


def _write(path: str, text: str) -> None:
    with open(path, "w") as file:
        file.write(text)
