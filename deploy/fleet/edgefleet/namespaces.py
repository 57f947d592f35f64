"""Network namespaces for a fleet: the origin's, with a bridge, and one per node joined to it by veth.

Names carry the run's id (`ef<pid>-o`, `ef<pid>-n<i>`), so `clean_stale()` can find what a run
that died left behind (its namespaces, and every process still inside one) and remove it.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import signal
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pyroute2 import IPRoute, netns

__all__ = ["NETNS_DIR", "Network", "NodeLink", "clean_stale", "inside", "socket_in"]

NETNS_DIR = Path("/run/netns")
_NAME = re.compile(r"^ef(\d+)-(o|n\d+)$")
# The fleet's subnet: the origin at .0.1, the runner's own door to the bridge at .255.254, nodes
# from .1.1 on.
SUBNET = ipaddress.ip_network("10.201.0.0/16")
ORIGIN_IP = "10.201.0.1"
HOST_IP = "10.201.255.254"


@contextlib.contextmanager
def inside(name: str) -> Iterator[None]:
    """Run the block with the calling thread in network namespace `name` (other threads stay)."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(NETNS_DIR / name, os.O_RDONLY)
    try:
        os.setns(target, os.CLONE_NEWNET)
        try:
            yield
        finally:
            os.setns(home, os.CLONE_NEWNET)
    finally:
        os.close(target)
        os.close(home)


def socket_in(name: str) -> socket.socket:
    """A TCP socket that lives in namespace `name` (a socket keeps the namespace it was made in)."""
    with inside(name):
        return socket.socket(socket.AF_INET, socket.SOCK_STREAM)


def nsenter(name: str) -> list[str]:
    """The argv prefix that runs a command in namespace `name`."""
    return ["nsenter", f"--net={NETNS_DIR / name}", "--"]


@dataclass(frozen=True)
class NodeLink:
    """One node's namespace and its end of the link to the origin's bridge."""

    index: int
    namespace: str
    address: str
    # The veth end in the origin's namespace (on the bridge): where traffic to the node leaves.
    peer: str


class Network:
    """The origin's namespace with a bridge, the runner's veth to it, and nodes added one by one."""

    def __init__(self, run_id: int | None = None) -> None:
        self.run_id = os.getpid() if run_id is None else run_id
        self.prefix = f"ef{self.run_id}"
        self.origin_ns = f"{self.prefix}-o"
        self.origin_ip = ORIGIN_IP
        self.nodes: list[NodeLink] = []
        self._created: list[str] = []

    def create(self) -> None:
        """The origin's namespace, its bridge `br0` at ORIGIN_IP, and the runner's veth into it."""
        self._namespace(self.origin_ns)
        with IPRoute(netns=self.origin_ns) as ipr:
            ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
            ipr.link("add", ifname="br0", kind="bridge")
            bridge = ipr.link_lookup(ifname="br0")[0]
            ipr.addr("add", index=bridge, address=ORIGIN_IP, prefixlen=SUBNET.prefixlen)
            ipr.link("set", index=bridge, state="up")
        host = f"{self.prefix}h"
        self._veth(host, "host", self.origin_ns)
        with IPRoute() as ipr:
            index = ipr.link_lookup(ifname=host)[0]
            ipr.addr("add", index=index, address=HOST_IP, prefixlen=SUBNET.prefixlen)
            ipr.link("set", index=index, state="up")

    def add_node(self) -> NodeLink:
        """A new namespace with `eth0` on the bridge (the next free address) and loopback up."""
        index = len(self.nodes) + 1
        name = f"{self.prefix}-n{index}"
        address = str(SUBNET.network_address + 256 + index)
        self._namespace(name)
        inner = f"{self.prefix}a{index}"
        self._veth(inner, f"n{index}", self.origin_ns)
        with IPRoute() as ipr:
            ipr.link("set", index=ipr.link_lookup(ifname=inner)[0], net_ns_fd=name)
        with IPRoute(netns=name) as ipr:
            ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
            link = ipr.link_lookup(ifname=inner)[0]
            ipr.link("set", index=link, ifname="eth0")
            ipr.addr("add", index=link, address=address, prefixlen=SUBNET.prefixlen)
            ipr.link("set", index=link, state="up")
        node = NodeLink(index, name, address, f"n{index}")
        self.nodes.append(node)
        return node

    def _namespace(self, name: str) -> None:
        netns.create(name)
        self._created.append(name)

    def _veth(self, here: str, there: str, namespace: str) -> None:
        """A veth pair: `here` stays in this namespace, `there` joins the bridge in `namespace`."""
        outer = f"{self.prefix}b{len(self._created)}"
        with IPRoute() as ipr:
            ipr.link("add", ifname=here, kind="veth", peer=outer)
            ipr.link("set", index=ipr.link_lookup(ifname=outer)[0], net_ns_fd=namespace)
        with IPRoute(netns=namespace) as ipr:
            bridge = ipr.link_lookup(ifname="br0")[0]
            link = ipr.link_lookup(ifname=outer)[0]
            ipr.link("set", index=link, ifname=there)
            ipr.link("set", index=link, master=bridge, state="up")

    def set_link(self, node: NodeLink, up: bool) -> None:
        """Take the node's link down (a cable pulled: both ends see it) or up again."""
        state = "up" if up else "down"
        with IPRoute(netns=node.namespace) as ipr:
            ipr.link("set", index=ipr.link_lookup(ifname="eth0")[0], state=state)
        with IPRoute(netns=self.origin_ns) as ipr:
            ipr.link("set", index=ipr.link_lookup(ifname=node.peer)[0], state=state)

    def destroy(self) -> None:
        """Kill every process left in this run's namespaces, then remove them (veths go with them)."""
        _kill_inside(self._created)
        for name in reversed(self._created):
            with contextlib.suppress(OSError, FileNotFoundError):
                netns.remove(name)
        self._created = []
        with IPRoute() as ipr, contextlib.suppress(Exception):
            for index in ipr.link_lookup(ifname=f"{self.prefix}h"):
                ipr.link("del", index=index)


def _kill_inside(names: list[str], grace: float = 3.0) -> None:
    """SIGTERM, then SIGKILL, every process whose network namespace is one of `names`."""
    inodes = set()
    for name in names:
        with contextlib.suppress(FileNotFoundError):
            inodes.add((NETNS_DIR / name).stat().st_ino)
    if not inodes:
        return

    def pids() -> list[int]:
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError):
                    if (entry / "ns" / "net").stat().st_ino in inodes:
                        found.append(int(entry.name))
        return found

    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 2.0)):
        left = pids()
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while left and time.monotonic() < deadline:
            time.sleep(0.05)
            left = pids()
        if not left:
            return


def clean_stale() -> list[str]:
    """Remove the namespaces (and their processes) of runs whose runner is gone; returns their names."""
    stale = []
    for entry in sorted(NETNS_DIR.glob("ef*")) if NETNS_DIR.is_dir() else []:
        match = _NAME.match(entry.name)
        if match is None:
            continue
        try:
            os.kill(int(match.group(1)), 0)
        except ProcessLookupError:
            stale.append(entry.name)
        except PermissionError:
            continue
    _kill_inside(stale)
    for name in stale:
        with contextlib.suppress(OSError):
            netns.remove(name)
    with IPRoute() as ipr:
        for link in ipr.get_links():
            name = link.get_attr("IFLA_IFNAME") or ""
            match = re.match(r"^ef(\d+)h$", name)
            if match and not Path(f"/proc/{match.group(1)}").exists():
                with contextlib.suppress(Exception):
                    ipr.link("del", index=link["index"])
    return stale
