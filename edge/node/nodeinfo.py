"""What a node tells the origin about itself when it registers (interfaces read with pyroute2)."""

from __future__ import annotations

import asyncio
import logging
import os
import platform
import socket

from edge.control.messages import Interface, NodeInfo

__all__ = ["interfaces", "node_info"]

log = logging.getLogger("edge.node")


def interfaces() -> list[Interface]:
    """Network interfaces and their addresses (CIDR), from the kernel over netlink.

    Call it from a thread with no running event loop: pyroute2 drives a loop of its own, and it
    must be a plain asyncio one (uvloop cannot open netlink sockets).
    """
    from pyroute2 import IPRoute

    loop = asyncio.SelectorEventLoop()
    asyncio.set_event_loop(loop)
    try:
        with IPRoute() as ipr:
            names = {link["index"]: link.get("ifname") for link in ipr.get_links()}
            found: dict[str, list[str]] = {name: [] for name in names.values() if name}
            for address in ipr.get_addr():
                name = names.get(address["index"])
                value = address.get("address")
                if name and value:
                    found.setdefault(name, []).append(f"{value}/{address['prefixlen']}")
    except (OSError, ValueError) as exc:  # no netlink (some containers): register without interfaces
        log.warning("cannot read network interfaces: %s", exc)
        return []
    finally:
        asyncio.set_event_loop(None)
        loop.close()
    return [Interface(name=name, addresses=addresses) for name, addresses in found.items()]


def _memory_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return 0


def node_info(node_id: str, labels: dict[str, str] | None = None, public_key: str = "") -> NodeInfo:
    """This machine, as the origin's `edge nodes` shows it, and the key its secrets are sealed to."""
    return NodeInfo(
        node_id=node_id,
        hostname=socket.gethostname(),
        arch=platform.machine(),
        python=platform.python_version(),
        cpus=os.cpu_count() or 1,
        memory_bytes=_memory_bytes(),
        interfaces=interfaces(),
        labels=labels or {},
        public_key=public_key,
    )
