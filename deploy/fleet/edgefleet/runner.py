"""Runs a scenario: builds the network and the fleet, plays the steps, measures, cleans up."""

from __future__ import annotations

import contextlib
import datetime
import http.client
import json
import math
import os
import platform
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from edge import bundle
from edge.control.client import OriginClient
from edgefleet import scenario as sc
from edgefleet.faults import LinkFaults, Shaper, kernel_offers
from edgefleet.namespaces import Network, NodeLink, clean_stale, socket_in
from edgefleet.processes import REPO, NsConnection, Server, get, tree_usage

__all__ = ["Runner", "percentile"]

FUNCTION = "fleet"
ORIGIN_PORT = 8700
NODE_PORT = 8080
WAVE = 10  # nodes started at once: 100 granian starts together would only queue on two cores
DEADLINE_S = 30.0  # a deploy, purge or convergence not done by then is recorded as missed


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank percentile `q` (0-100] of `values` (nan when there are none)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q / 100 * len(ordered))) - 1]


def _environ(extra: dict[str, str]) -> dict[str, str]:
    return {**{k: v for k, v in os.environ.items() if not k.startswith("EDGE_")}, **extra}


class _Load:
    """Client threads in the targets' namespaces, each GETting the function at `rate_hz`."""

    def __init__(self, nodes: list[NodeLink], rate_hz: float) -> None:
        self.stopping = threading.Event()
        self.requests = 0
        self.failures: list[str] = []
        self._lock = threading.Lock()
        self._interval = 1 / rate_hz
        self._threads = [threading.Thread(target=self._run, args=(node,), daemon=True) for node in nodes]
        for thread in self._threads:
            thread.start()

    def _run(self, node: NodeLink) -> None:
        connection = NsConnection(node.namespace, NODE_PORT, timeout=5)
        while not self.stopping.wait(self._interval):
            try:
                status, body = get(connection, f"/{FUNCTION}")
                problem = "" if status == 200 else f"{status} {body[:100]!r}"
            except (OSError, http.client.HTTPException) as exc:
                problem = f"{type(exc).__name__}: {exc}"
            with self._lock:
                self.requests += 1
                if problem:
                    self.failures.append(f"node {node.index}: {problem}")
        connection.close()

    def stop(self) -> None:
        self.stopping.set()
        for thread in self._threads:
            thread.join(10)


class Runner:
    """One run of a scenario; `run()` returns the results (also written as JSON to `out`)."""

    def __init__(
        self,
        scenario: sc.Scenario,
        out: Path | None = None,
        backend: str | None = None,
        say: Callable[[str], None] = print,
    ) -> None:
        self.scenario = scenario
        self.out = out
        self.backend = backend
        self.say = say
        self.network = Network()
        self.shaper: Shaper | None = None
        self.origin: Server | None = None
        self.nodes: dict[int, Server] = {}
        self.work = Path(tempfile.mkdtemp(prefix="edge-fleet-"))
        self.admin: OriginClient | None = None
        self.body = b""
        self.digest = ""
        self.version = 0
        self.load: _Load | None = None
        self.results: dict[str, Any] = {
            "propagation_ms": [],
            "missed_deploys": [],
            "convergence_ms": [],
            "purge_ms": [],
            "connect_ms": [],
            "requests": 0,
            "failed_requests": 0,
            "failures": [],
            "node_cpu_ms_per_deploy": [],
            "node_cpu_ms_per_deploy_raw": [],
            "idle": [],
            "steps": [],
            "assertions": [],
        }
        self.interval = max(0.005, 0.0002 * scenario.nodes)  # how often a watcher looks
        self._rate: float | None = None  # the fleet's CPU per second while idle

    # The fleet.

    def run(self) -> dict[str, Any]:
        """Build, play every step, tear down (also on KeyboardInterrupt); returns the results."""
        started = time.monotonic()
        try:
            self._build()
            begin = time.monotonic()
            for number, step in enumerate(self.scenario.steps):
                if step.at is not None and time.monotonic() - begin < step.at:
                    time.sleep(step.at - (time.monotonic() - begin))
                name = type(step).__struct_config__.tag
                self.say(f"[{time.monotonic() - begin:6.1f} s] step {number}: {name}")
                t0 = time.monotonic()
                getattr(self, f"_{name}")(step)
                self.results["steps"].append(
                    {
                        "step": number,
                        "action": name,
                        "at_s": round(t0 - begin, 3),
                        "took_s": round(time.monotonic() - t0, 3),
                    }
                )
        finally:
            self.close()
        self.results["wall_s"] = round(time.monotonic() - started, 1)
        return self.finish()

    def _build(self) -> None:
        clean_stale()
        if shutil.which("nsenter") is None:
            raise RuntimeError("the fleet harness needs nsenter (util-linux)")
        backend = self.backend or kernel_offers()
        self.results["backend"] = backend
        self.network.create()
        self.shaper = Shaper(self.network, backend)
        data = self.work / "origin"
        args = ["origin", "--host", "0.0.0.0", "--port", str(ORIGIN_PORT), "--data", str(data)]
        args += ["--heartbeat-interval", "2", "--log-level", "warning"]
        self.origin = Server(
            self.network.origin_ns,
            args,
            self.work / "origin.log",
            _environ({}),
            ORIGIN_PORT,
        )
        self.origin.start()
        self.origin.wait_ready("/v1/health", 60)
        url = f"http://{self.network.origin_ip}:{ORIGIN_PORT}"
        self.admin = OriginClient(url, (data / "admin-token").read_text().strip(), timeout=30)
        token = subprocess.run(
            [
                sys.executable,
                "-m",
                "edge",
                "origin",
                "token",
                "create",
                "--role",
                "node",
                "--data",
                str(data),
            ],
            capture_output=True,
            text=True,
            check=True,
            cwd=REPO,
            env=_environ({}),
        ).stdout.strip()
        token_file = self.work / "node-token"
        token_file.touch(mode=0o600)
        token_file.write_text(token + "\n")
        self._deploy_one()  # the first version: every node starts with something to serve
        env = _environ(
            {"EDGE_LOG_LEVEL": "warning", "EDGE_POLL_TIMEOUT_S": f"{self.scenario.poll_timeout_s:g}"}
        )
        for first in range(0, self.scenario.nodes, WAVE):
            wave = []
            for _ in range(first, min(first + WAVE, self.scenario.nodes)):
                link = self.network.add_node()
                args = ["node", "--origin", url, "--token-file", str(token_file), "--port", str(NODE_PORT)]
                args += ["--data", str(self.work / f"node{link.index}"), "--workers", "1"]
                node = Server(link.namespace, args, self.work / f"node{link.index}.log", env, NODE_PORT)
                node.start()
                self.nodes[link.index] = node
                wave.append(node)
            for node in wave:
                node.wait_ready("/_edge/ready", 120)
            self.say(f"  {len(self.nodes)} nodes up")
        missing = self._until_serving(self.network.nodes, 60)
        if missing:
            raise RuntimeError(f"nodes {missing} did not serve the first version within 60 s")

    def close(self) -> None:
        """Stop clients, nodes (in parallel), the origin; remove faults and namespaces."""
        if self.load is not None:
            self.load.stop()
        with ThreadPoolExecutor(32) as pool:
            list(pool.map(lambda node: node.stop(), self.nodes.values()))
        if self.origin is not None:
            self.origin.stop()
        if self.shaper is not None:
            self.shaper.close()
        self.network.destroy()
        if self.admin is not None:
            self.admin.close()
        shutil.rmtree(self.work, ignore_errors=True)

    # Watching nodes.

    def _serving(self, node: NodeLink, body: bytes, digest: str, deadline: float) -> float | None:
        """When `node` switched to the version `digest` (monotonic), checked by a GET answering
        `body`; None if not by `deadline`.

        The node writes `applied.json` right after it switched traffic to a new version, so the
        file's mtime is the switch time, read without asking the node anything: polling each node
        over HTTP every few ms would cost a 100-node fleet about a core of its two (measured).
        """
        path = self.work / f"node{node.index}" / "applied.json"
        seen = 0
        while True:
            with contextlib.suppress(OSError):
                mtime = path.stat().st_mtime_ns
                if mtime != seen:
                    seen = mtime
                    if digest in path.read_text():
                        break
            if time.monotonic() >= deadline:
                return None
            time.sleep(self.interval)
        switched = seen / 1e9 + (time.monotonic() - time.time())
        connection = NsConnection(node.namespace, NODE_PORT, timeout=5)
        try:
            while True:
                with contextlib.suppress(OSError, http.client.HTTPException):
                    if get(connection, f"/{FUNCTION}") == (200, body):
                        return switched
                if time.monotonic() >= deadline:
                    return None
                time.sleep(0.005)
        finally:
            connection.close()

    def _times(self, nodes: list[NodeLink], deadline: float) -> dict[int, float | None]:
        body, digest = self.body, self.digest
        with ThreadPoolExecutor(max(1, len(nodes))) as pool:
            arrived = pool.map(lambda node: self._serving(node, body, digest, deadline), nodes)
            return {node.index: when for node, when in zip(nodes, arrived, strict=True)}

    def _until_serving(self, nodes: list[NodeLink], timeout: float) -> list[int]:
        times = self._times(nodes, time.monotonic() + timeout)
        return [index for index, when in times.items() if when is None]

    def _reachable(self) -> list[NodeLink]:
        assert self.shaper is not None
        return [n for n in self.network.nodes if not self.shaper.current.get(n.index, LinkFaults()).partition]

    def _deploy_one(self) -> float:
        """Deploy the next version; returns when the origin stored it (monotonic)."""
        assert self.admin is not None
        self.version += 1
        body = f"version {self.version} {secrets.token_hex(4)}"
        directory = self.work / "function"
        directory.mkdir(exist_ok=True)
        (directory / "edge.toml").write_text(f'name = "{FUNCTION}"\n')
        (directory / "main.py").write_text(f"def handler(request):\n    return {body!r}\n")
        data = bundle.pack(directory)
        self.admin.deploy(FUNCTION, data)
        self.body, self.digest = body.encode(), bundle.digest(data)
        return time.monotonic()

    def _node_cpu(self) -> float:
        usage = tree_usage([node.pid for node in self.nodes.values()])
        return sum(cpu for cpu, _ in usage.values())

    # Steps.

    def _deploy(self, step: sc.Deploy) -> None:
        idle_rate = self._idle_rate()
        cpu, started = self._node_cpu(), time.monotonic()
        for _ in range(step.count):
            time.sleep(step.pause_s)
            reachable = self._reachable()
            t0 = self._deploy_one()
            times = self._times(reachable, t0 + DEADLINE_S)
            late = [index for index, when in times.items() if when is None]
            if late:
                self.results["missed_deploys"].append({"version": self.version, "nodes": late})
            arrived = [when for when in times.values() if when is not None]
            if arrived and not late:
                self.results["propagation_ms"].append(round((max(arrived) - t0) * 1000, 1))
        spent = self._node_cpu() - cpu
        # What the nodes would have spent anyway, long-polling; the rest is applying the deploys
        # (and one GET per node and deploy that checks it).
        background = idle_rate * (time.monotonic() - started)
        per_node = 1000 / step.count / len(self.nodes)
        self.results["node_cpu_ms_per_deploy_raw"].append(round(spent * per_node, 1))
        self.results["node_cpu_ms_per_deploy"].append(round((spent - background) * per_node, 1))

    def _idle_rate(self) -> float:
        """The fleet's CPU seconds per second while it only long-polls (measured once, for 2 s)."""
        if self._rate is None:
            cpu, t0 = self._node_cpu(), time.monotonic()
            time.sleep(2.0)
            self._rate = (self._node_cpu() - cpu) / (time.monotonic() - t0)
            self.results["node_cpu_ms_per_s_idle"] = round(self._rate * 1000 / len(self.nodes), 2)
        return self._rate

    def _purge(self, step: sc.Purge) -> None:
        assert self.admin is not None
        ids = {node.index for node in self._reachable()}
        order = self.admin.purge(FUNCTION, "all")
        t0 = time.monotonic()
        deadline = t0 + DEADLINE_S
        while time.monotonic() < deadline:
            reported = self._node_purges()
            if all(reported.get(index, 0) >= order.id for index in ids):
                self.results["purge_ms"].append(round((time.monotonic() - t0) * 1000, 1))
                return
            time.sleep(0.05)
        self.results["purge_ms"].append(math.inf)

    def _node_purges(self) -> dict[int, int]:
        """Node index -> the purge id it last reported to the origin as applied."""
        assert self.admin is not None
        by_id = {}
        for number in self.nodes:
            with contextlib.suppress(OSError):
                by_id[(self.work / f"node{number}" / "node-id").read_text().strip()] = number
        found = {}
        for status in self.admin.nodes().nodes:
            index = by_id.get(status.info.node_id)
            if index is not None and status.report is not None:
                found[index] = status.report.applied_purge_id
        return found

    def _targets(self, step: Any) -> list[NodeLink]:
        indices = sc.pick_targets(step.targets, len(self.network.nodes), "targets")
        return [self.network.nodes[index - 1] for index in indices]

    def _fault(self, step: sc.Fault) -> None:
        assert self.shaper is not None
        for node in self._targets(step):
            self.shaper.apply(node, step.faults())

    def _heal(self, step: sc.Heal) -> None:
        assert self.shaper is not None
        targets = [n for n in self._targets(step) if not self.shaper.current.get(n.index, LinkFaults()).clean]
        cut = {n.index for n in targets if self.shaper.current[n.index].partition}
        healed = {}
        for node in targets:
            self.shaper.apply(node, LinkFaults())
            healed[node.index] = time.monotonic()
        self._converge([n for n in targets if n.index in cut], healed)

    def _converge(self, nodes: list[NodeLink], since: dict[int, float]) -> None:
        """Record, per node, the time from `since[node]` until it serves the last deployed version."""
        deadline = min(since.values(), default=time.monotonic()) + DEADLINE_S
        for index, when in self._times(nodes, deadline).items():
            took = (when - since[index]) * 1000 if when is not None else math.inf
            self.results["convergence_ms"].append(round(took, 1))

    def _flap(self, step: sc.Flap) -> None:
        assert self.shaper is not None
        targets = self._targets(step)
        for _ in range(step.cycles):
            for node in targets:
                self.shaper.apply(node, LinkFaults(partition=step.partition))
            self._deploy_one()  # something the cut nodes miss
            time.sleep(step.down_s)
            healed = {}
            for node in targets:
                self.shaper.apply(node, LinkFaults())
                healed[node.index] = time.monotonic()
            self._converge(targets, healed)
            time.sleep(max(0.0, step.up_s - (time.monotonic() - max(healed.values()))))

    def _wait(self, step: sc.Wait) -> None:
        time.sleep(step.seconds)

    def _origin_stop(self, step: sc.OriginStop) -> None:
        assert self.origin is not None
        self.origin.stop()

    def _origin_start(self, step: sc.OriginStart) -> None:
        assert self.origin is not None and self.admin is not None
        self.origin.start()
        self.origin.wait_ready("/v1/health", 60)
        # Convergence after the origin's return: a version deployed at once reaches every node.
        t0 = self._deploy_one()
        reachable = self._reachable()
        self._converge(reachable, dict.fromkeys((node.index for node in reachable), t0))

    def _load_start(self, step: sc.LoadStart) -> None:
        if self.load is not None:
            self._load_stop(sc.LoadStop())
        self.load = _Load(self._targets(step), step.rate_hz)

    def _load_stop(self, step: sc.LoadStop) -> None:
        if self.load is None:
            return
        self.load.stop()
        self.results["requests"] += self.load.requests
        self.results["failed_requests"] += len(self.load.failures)
        self.results["failures"] += self.load.failures[:20]
        self.load = None

    def _idle(self, step: sc.Idle) -> None:
        assert self.origin is not None
        before = tree_usage([self.origin.pid])[self.origin.pid][0]
        time.sleep(step.seconds)
        cpu, rss = tree_usage([self.origin.pid])[self.origin.pid]
        self.results["idle"].append(
            {
                "seconds": step.seconds,
                "long_polling_nodes": len(self.nodes),
                "origin_cpu_pct": round((cpu - before) / step.seconds * 100, 2),
                "origin_rss_mb": round(rss / 2**20, 1),
            }
        )

    def _connect(self, step: sc.Connect) -> None:
        for node in self._targets(step):
            for _ in range(step.samples):
                sock = socket_in(node.namespace)
                sock.settimeout(10)
                t0 = time.monotonic()
                try:
                    sock.connect((self.network.origin_ip, ORIGIN_PORT))
                    self.results["connect_ms"].append(round((time.monotonic() - t0) * 1000, 2))
                except OSError as exc:
                    self.results["failures"].append(f"connect from node {node.index}: {exc}")
                finally:
                    sock.close()

    def _assert(self, step: sc.Assert) -> None:
        value = self.metrics()[step.metric]
        ok = (
            not math.isnan(value)
            and (step.max is None or value <= step.max)
            and (step.min is None or value >= step.min)
        )
        self.results["assertions"].append(
            {"metric": step.metric, "value": value, "min": step.min, "max": step.max, "ok": ok}
        )

    # Results.

    def metrics(self) -> dict[str, float]:
        r = self.results
        failed = r["failed_requests"] + (len(self.load.failures) if self.load is not None else 0)
        return {
            "propagation_p50_ms": percentile(r["propagation_ms"], 50),
            "propagation_p99_ms": percentile(r["propagation_ms"], 99),
            "convergence_p99_ms": percentile(r["convergence_ms"], 99),
            "convergence_max_ms": max(r["convergence_ms"], default=math.nan),
            "failed_requests": float(failed),
            "connect_min_ms": min(r["connect_ms"], default=math.nan),
            "connect_p50_ms": percentile(r["connect_ms"], 50),
            "purge_max_ms": max(r["purge_ms"], default=math.nan),
        }

    def finish(self) -> dict[str, Any]:
        """Summary, table, JSON file; `ok` is False when an assertion failed or a deploy was missed."""
        r = self.results
        r["scenario"] = self.scenario.name
        r["nodes"] = self.scenario.nodes
        r["date"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        r["machine"] = {"cpus": os.cpu_count(), "kernel": platform.release()}
        r["summary"] = {k: (None if math.isnan(v) else v) for k, v in self.metrics().items()}
        r["convergence_ms"] = [v if math.isfinite(v) else "missed" for v in r["convergence_ms"]]
        r["ok"] = all(a["ok"] for a in r["assertions"]) and not r["missed_deploys"]
        self.say(self.table())
        if self.out is not None:
            self.out.parent.mkdir(parents=True, exist_ok=True)
            self.out.write_text(json.dumps(r, indent=1) + "\n")
            self.say(f"results: {self.out}")
        return r

    def table(self) -> str:
        r = self.results
        rows = [("scenario", f"{r['scenario']} ({r['nodes']} nodes, {r['backend']} faults)")]
        for key, value in r["summary"].items():
            if value is not None:
                rows.append((key, f"{value:g}"))
        rows.append(("requests (failed)", f"{r['requests']} ({r['failed_requests']})"))
        if r["node_cpu_ms_per_deploy"]:
            net = ", ".join(f"{v:g}" for v in r["node_cpu_ms_per_deploy"])
            raw = ", ".join(f"{v:g}" for v in r["node_cpu_ms_per_deploy_raw"])
            rows.append(("node CPU ms per deploy", f"{net} (with long-polling: {raw})"))
        for idle in r["idle"]:
            rows.append(
                (
                    f"origin, {idle['long_polling_nodes']} nodes polling",
                    f"{idle['origin_cpu_pct']:g}% CPU, {idle['origin_rss_mb']:g} MB RSS",
                )
            )
        if r["missed_deploys"]:
            rows.append(("missed deploys", json.dumps(r["missed_deploys"])))
        for a in r["assertions"]:
            bound = " and ".join(
                text
                for text in (
                    f">= {a['min']:g}" if a["min"] is not None else "",
                    f"<= {a['max']:g}" if a["max"] is not None else "",
                )
                if text
            )
            rows.append(
                (f"assert {a['metric']} {bound}", f"{'ok' if a['ok'] else 'FAILED'} ({a['value']:g})")
            )
        width = max(len(name) for name, _ in rows)
        return "\n".join(f"  {name:<{width}}  {value}" for name, value in rows)
