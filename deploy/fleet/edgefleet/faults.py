"""Faults on one node's link to the origin: delay, jitter, loss, rate, partitions.

Two implementations, picked by `kernel_offers()` from BACKENDS:

- "netem": the kernel's netem qdisc (through pyroute2's tc) for delay, jitter and loss on the
  node's egress and loss on the origin's egress towards it; rate with TBF.
- "nftables": for kernels without netem (CONFIG_NET_SCH_NETEM off). Loss is an nftables rule in
  the node's namespace (`numgen random` drops, both directions), rate is TBF on both ends of the
  veth, delay and jitter are added in user space: an iptables NFQUEUE rule hands the node's
  packets to the origin to `edgefleet.delayer`, which gives each its verdict after the delay.

Partitions are the same in both: "drop" is an nftables rule dropping everything between the node
and the origin (a silent cut: no RST, no ICMP), "down" takes both ends of the veth down.
Delay is added once per round trip (on the node's packets), as netem on the node's interface
would; loss applies in each direction.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import msgspec
from pyroute2 import IPRoute, NetlinkError, netns

from edgefleet.namespaces import Network, NodeLink, nsenter

__all__ = ["BACKENDS", "Delayer", "FaultError", "LinkFaults", "Shaper", "kernel_offers"]


class FaultError(Exception):
    """A fault could not be applied (a missing tool or kernel feature); the message says which."""


class LinkFaults(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What is wrong with one node's link; the default is a clean link."""

    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    loss_pct: float = 0.0
    rate_kbit: int = 0
    partition: Literal["", "drop", "down"] = ""

    @property
    def clean(self) -> bool:
        return self == LinkFaults()


def _tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise FaultError(
            f"the fleet harness needs `{name}` (Debian package {package}); run deploy/fleet/install-deps"
        )
    return path


def kernel_offers() -> str:
    """The backend this kernel supports: "netem" when a netem qdisc can be added, else "nftables"."""
    name = "ef-probe"
    netns.create(name)
    try:
        with IPRoute(netns=name) as ipr:
            lo = ipr.link_lookup(ifname="lo")[0]
            ipr.link("set", index=lo, state="up")
            try:
                ipr.tc("add", "netem", lo, delay=1000)
            except NetlinkError:
                return "nftables"
            return "netem"
    finally:
        netns.remove(name)


def _nft(node: NodeLink, origin_ip: str, faults: LinkFaults) -> None:
    """Replace the node's `edgefleet` nftables table with the drops `faults` asks for."""
    rules = []
    if faults.partition == "drop":
        rules = [("input", f"ip saddr {origin_ip} drop"), ("output", f"ip daddr {origin_ip} drop")]
    elif faults.loss_pct > 0:
        threshold = round(faults.loss_pct * 100)  # numgen over 0..9999: hundredths of a percent
        rules = [
            ("input", f"ip saddr {origin_ip} numgen random mod 10000 < {threshold} drop"),
            ("output", f"ip daddr {origin_ip} numgen random mod 10000 < {threshold} drop"),
        ]
    chains = "\n".join(
        f"  chain {hook} {{\n    type filter hook {hook} priority 0; policy accept;\n"
        + "".join(f"    {rule}\n" for chain, rule in rules if chain == hook)
        + "  }"
        for hook in ("input", "output")
    )
    # Adding, deleting and filling the table in one transaction: it never exists half-written.
    text = f"table inet edgefleet\ndelete table inet edgefleet\ntable inet edgefleet {{\n{chains}\n}}\n"
    result = subprocess.run(
        [*nsenter(node.namespace), _tool("nft", "nftables"), "-f", "-"],
        input=text,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise FaultError(f"nft in {node.namespace}: {result.stderr.strip()}\nruleset:\n{text}")


def _rate(ipr: IPRoute, ifname: str, rate_kbit: int) -> None:
    """TBF at `rate_kbit` on `ifname`'s egress (0: none)."""
    index = ipr.link_lookup(ifname=ifname)[0]
    with contextlib.suppress(NetlinkError):  # no qdisc of ours there
        ipr.tc("del", index=index)
    if rate_kbit:
        burst = max(1600, rate_kbit * 1000 // 8 // 100)  # 10 ms of traffic, at least a packet
        ipr.tc("add", "tbf", index, rate=f"{rate_kbit}kbit", burst=burst, latency=100_000)


class Delayer:
    """The user-space delay process (`python -m edgefleet.delayer`): one per run, for all nodes."""

    def __init__(self) -> None:
        self.process: subprocess.Popen[str] | None = None

    def set(self, node: NodeLink, delay_ms: float, jitter_ms: float) -> None:
        """Delay the node's packets to the origin by `delay_ms` +- `jitter_ms` (0: not at all)."""
        if self.process is None:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "edgefleet.delayer"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                cwd=Path(__file__).resolve().parent.parent,
            )
        assert self.process.stdin is not None and self.process.stdout is not None
        command = {"netns": node.namespace, "queue": node.index, "delay_ms": delay_ms, "jitter_ms": jitter_ms}
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()
        answer = self.process.stdout.readline().strip()
        if answer != "ok":
            raise FaultError(f"the delayer refused {command}: {answer or 'it exited'}")

    def stop(self) -> None:
        """End the delayer (its stdin closing ends it; it is killed if it does not go)."""
        process, self.process = self.process, None
        if process is None:
            return
        assert process.stdin is not None and process.stdout is not None
        process.stdin.close()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        process.stdout.close()


class Shaper:
    """Applies LinkFaults to nodes of a Network with one backend; `heal_all` clears every node."""

    def __init__(self, network: Network, backend: str) -> None:
        if backend not in BACKENDS:
            raise FaultError(f"fault backend: Expected one of {sorted(BACKENDS)}, got {backend!r}")
        self.network = network
        self.backend = backend
        self.delayer = Delayer()
        self.current: dict[int, LinkFaults] = {}

    def apply(self, node: NodeLink, faults: LinkFaults) -> None:
        """Make the node's link have exactly `faults` (replacing what it had)."""
        before = self.current.get(node.index, LinkFaults())
        if faults.partition == "down" or before.partition == "down":
            self.network.set_link(node, up=faults.partition != "down")
        BACKENDS[self.backend](self, node, faults, before)
        self.current[node.index] = faults

    def heal_all(self) -> None:
        for node in self.network.nodes:
            if not self.current.get(node.index, LinkFaults()).clean:
                self.apply(node, LinkFaults())

    def close(self) -> None:
        self.delayer.stop()

    def _nftables(self, node: NodeLink, faults: LinkFaults, before: LinkFaults) -> None:
        _nft(node, self.network.origin_ip, faults)
        if faults.rate_kbit != before.rate_kbit:
            with IPRoute(netns=node.namespace) as ipr:
                _rate(ipr, "eth0", faults.rate_kbit)
            with IPRoute(netns=self.network.origin_ns) as ipr:
                _rate(ipr, node.peer, faults.rate_kbit)
        delayed = faults.delay_ms > 0 or faults.jitter_ms > 0
        was = before.delay_ms > 0 or before.jitter_ms > 0
        if delayed != was:
            iptables = _tool("iptables", "iptables")
            rule = ["OUTPUT", "-d", self.network.origin_ip, "-j", "NFQUEUE", "--queue-num", str(node.index)]
            # --queue-bypass: should the delayer die, packets pass undelayed rather than vanish.
            argv = [*nsenter(node.namespace), iptables, "-A" if delayed else "-D", *rule, "--queue-bypass"]
            result = subprocess.run(argv, capture_output=True, text=True, check=False)
            if result.returncode != 0:
                raise FaultError(f"iptables in {node.namespace}: {result.stderr.strip()}")
        if delayed or was:
            self.delayer.set(node, faults.delay_ms, faults.jitter_ms)

    def _netem(self, node: NodeLink, faults: LinkFaults, before: LinkFaults) -> None:
        # Partitions by drop are nftables rules in both backends; loss is netem's here.
        _nft(node, self.network.origin_ip, msgspec.structs.replace(faults, loss_pct=0.0))
        for namespace, ifname, delay in (
            (node.namespace, "eth0", True),
            (self.network.origin_ns, node.peer, False),
        ):
            with IPRoute(netns=namespace) as ipr:
                index = ipr.link_lookup(ifname=ifname)[0]
                with contextlib.suppress(NetlinkError):
                    ipr.tc("del", index=index)
                shaped = (faults.delay_ms or faults.jitter_ms) if delay else 0
                if shaped or faults.loss_pct or faults.rate_kbit:
                    options: dict[str, object] = {"loss": faults.loss_pct}
                    if delay:
                        options["delay"] = int(faults.delay_ms * 1000)
                        options["jitter"] = int(faults.jitter_ms * 1000)
                    if faults.rate_kbit:
                        options["rate"] = f"{faults.rate_kbit}kbit"
                    ipr.tc("add", "netem", index, **options)


BACKENDS: dict[str, Callable[[Shaper, NodeLink, LinkFaults, LinkFaults], None]] = {
    "nftables": Shaper._nftables,
    "netem": Shaper._netem,
}
