"""What a process tree holds in memory, read from /proc (Linux): RSS, PSS, USS, thread stacks, threads.

RSS counts a page in every process that maps it, so the RSS of a forked worker and of its parent
both count the pages they share; PSS splits each shared page between the processes that map it
(their PSS adds up to what the tree really holds); USS is what a process holds alone.

Thread stacks: glibc maps each new thread's stack as one anonymous read-write mapping of the stack
size (8 MiB by default, the soft RLIMIT_STACK) above a guard page of its own. Only the pages a thread touched
are resident (a few KiB each), but they count in RSS: `stacks` is the RSS of the mappings of
exactly that size, so a figure "without thread stacks" is `rss - stacks`.
"""

from __future__ import annotations

import os
import resource
import threading
from pathlib import Path
from typing import NamedTuple

__all__ = ["Memory", "process_memory", "process_tree", "tree_memory"]


class Memory(NamedTuple):
    """One process's memory in KiB (or the sum over a tree) and its thread count."""

    rss: int
    pss: int
    uss: int
    stacks: int
    threads: int

    def __add__(self, other: object) -> Memory:
        if not isinstance(other, Memory):
            return NotImplemented
        return Memory(*(a + b for a, b in zip(self, other, strict=True)))


def process_tree(pid: int) -> list[int]:
    """`pid` and all its descendants (children of every thread), parents first."""
    found = [pid]
    index = 0
    while index < len(found):
        current = found[index]
        index += 1
        try:
            for task in os.listdir(f"/proc/{current}/task"):
                children = Path(f"/proc/{current}/task/{task}/children").read_text()
                found += [int(child) for child in children.split()]
        except (FileNotFoundError, ProcessLookupError):  # exited meanwhile
            continue
    return found


def _stack_kib() -> int:
    """The size in KiB of a new thread's stack mapping (its guard page is a mapping of its own)."""
    size = threading.stack_size()
    if not size:
        soft, _ = resource.getrlimit(resource.RLIMIT_STACK)
        size = soft if soft not in (resource.RLIM_INFINITY, -1) else 8 << 20
    return size // 1024


def process_memory(pid: int, stack_kib: int | None = None) -> Memory:
    """RSS, PSS, USS and the RSS of thread stacks of `pid` (KiB), and its thread count.

    `stack_kib`: the size of a thread stack mapping (default: what this process would use).
    Raises FileNotFoundError when the process is gone.
    """
    stack_size = stack_kib if stack_kib is not None else _stack_kib()
    rollup: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, _, rest = line.partition(":")
        rollup[name] = int(rest.split()[0])
    stacks = 0
    size = 0
    anonymous_rw = False
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        first = line.split(maxsplit=5)
        if "-" in first[0] and len(first) >= 5:  # a mapping's header: range perms offset dev inode [path]
            anonymous_rw = first[1].startswith("rw") and first[4] == "0" and len(first) == 5
        elif first[0] == "Size:":
            size = int(first[1])
        elif first[0] == "Rss:" and anonymous_rw and size == stack_size:
            stacks += int(first[1])
    threads = len(os.listdir(f"/proc/{pid}/task"))
    uss = rollup["Private_Clean"] + rollup["Private_Dirty"]
    return Memory(rollup["Rss"], rollup["Pss"], uss, stacks, threads)


def tree_memory(pid: int) -> dict[int, Memory]:
    """process_memory of `pid` and each of its descendants still alive, by pid."""
    found = {}
    for member in process_tree(pid):
        try:
            found[member] = process_memory(member)
        except (FileNotFoundError, ProcessLookupError):
            continue
    return found
