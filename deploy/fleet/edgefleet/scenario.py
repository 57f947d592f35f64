"""Scenario files (TOML): a fleet size and steps with times, targets, faults, deploys and assertions.

name = "partition"
nodes = 20
[[steps]]
action = "fault"      # see STEPS for every action and its fields
targets = "30%"       # "all", "N%" (the first N% of the nodes) or [1, 2, 5]
partition = "drop"
[[steps]]
at = 5.0              # not before 5 s after the fleet was ready (default: right after the last step)
action = "deploy"
count = 10
"""

from __future__ import annotations

import math
import re
import tomllib
from pathlib import Path
from typing import Literal

import msgspec

from edgefleet.faults import LinkFaults

__all__ = ["STEPS", "Scenario", "ScenarioError", "load_scenario", "pick_targets"]

Targets = str | list[int]


class ScenarioError(Exception):
    """A scenario file that cannot run; the message names the file, the place and the fix."""


class _Step(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, tag_field="action"):
    at: float | None = None


class Deploy(_Step, tag="deploy"):
    """Deploy `count` new versions, `pause_s` apart; each is timed to every reachable node."""

    count: int = 1
    pause_s: float = 0.5


class Purge(_Step, tag="purge"):
    """Purge the function's cache; timed until every reachable node reports it applied."""


class Fault(_Step, tag="fault"):
    """Give the targets' links these faults (replacing what they had)."""

    targets: Targets = "all"
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    loss_pct: float = 0.0
    rate_kbit: int = 0
    partition: Literal["", "drop", "down"] = ""

    def faults(self) -> LinkFaults:
        return LinkFaults(
            delay_ms=self.delay_ms,
            jitter_ms=self.jitter_ms,
            loss_pct=self.loss_pct,
            rate_kbit=self.rate_kbit,
            partition=self.partition,
        )


class Heal(_Step, tag="heal"):
    """Clear the targets' faults; times each until it serves the last deployed version."""

    targets: Targets = "all"


class Flap(_Step, tag="flap"):
    """Cut and restore the targets' links `cycles` times, `down_s` cut and `up_s` restored."""

    targets: Targets = "all"
    cycles: int = 5
    down_s: float = 1.0
    up_s: float = 1.0
    partition: Literal["drop", "down"] = "down"


class Wait(_Step, tag="wait"):
    seconds: float


class OriginStop(_Step, tag="origin_stop"):
    """Stop the origin (SIGTERM); nodes keep serving what they have."""


class OriginStart(_Step, tag="origin_start"):
    """Start the origin again on the same port and data."""


class LoadStart(_Step, tag="load_start"):
    """Clients inside each target's namespace GET the function over loopback until load_stop."""

    targets: Targets = "all"
    rate_hz: float = 20.0


class LoadStop(_Step, tag="load_stop"):
    """Stop the clients; their requests and failures are counted."""


class Idle(_Step, tag="idle"):
    """Measure the origin's CPU and memory while the nodes only long-poll, for `seconds`."""

    seconds: float = 10.0


class Connect(_Step, tag="connect"):
    """Time TCP connects from each target's namespace to the origin (shows configured delay)."""

    targets: Targets = "all"
    samples: int = 5


class Assert(_Step, tag="assert"):
    """Fail the run unless `metric` (see README) is within [min, max]."""

    metric: str
    max: float | None = None
    min: float | None = None


Step = (
    Deploy
    | Purge
    | Fault
    | Heal
    | Flap
    | Wait
    | OriginStop
    | OriginStart
    | LoadStart
    | LoadStop
    | Idle
    | Connect
    | Assert
)
STEPS = {cls.__struct_config__.tag: cls for cls in Step.__args__}


class Scenario(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: str
    description: str = ""
    nodes: int = 20
    # The nodes' long-poll timeout (EDGE_POLL_TIMEOUT_S).
    poll_timeout_s: float = 25.0
    steps: list[Step] = []


_PERCENT = re.compile(r"^(\d+(?:\.\d+)?)%$")


def pick_targets(targets: Targets, nodes: int, where: str) -> list[int]:
    """Node indices (1-based) that `targets` names among `nodes` nodes."""
    if isinstance(targets, list):
        bad = [index for index in targets if not 1 <= index <= nodes]
        if bad:
            raise ScenarioError(f"{where}: Expected node numbers 1..{nodes}, got {bad}")
        return sorted(set(targets))
    if targets == "all":
        return list(range(1, nodes + 1))
    match = _PERCENT.match(targets)
    if match is None or not 0 < float(match.group(1)) <= 100:
        raise ScenarioError(
            f'{where}: Expected "all", "N%" (0 < N <= 100) or a list of node numbers, got {targets!r}'
        )
    return list(range(1, math.ceil(float(match.group(1)) / 100 * nodes) + 1))


def load_scenario(path: Path, nodes: int | None = None) -> Scenario:
    """Read and check a scenario file; `nodes` overrides its fleet size."""
    try:
        data = tomllib.loads(path.read_text())
        scenario = msgspec.convert(data, Scenario)
    except FileNotFoundError:
        raise ScenarioError(f"{path}: no such scenario file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{path}: not valid TOML: {exc}") from None
    except msgspec.ValidationError as exc:
        raise ScenarioError(f"{path}: {exc}") from None
    if nodes is not None:
        scenario = msgspec.structs.replace(scenario, nodes=nodes)
    if scenario.nodes < 1:
        raise ScenarioError(f"{path}: Expected nodes >= 1, got {scenario.nodes} - at `$.nodes`")
    if not 1 <= scenario.poll_timeout_s <= 60:
        raise ScenarioError(
            f"{path}: Expected 1 <= poll_timeout_s <= 60 (the node's range), got {scenario.poll_timeout_s}"
            " - at `$.poll_timeout_s`"
        )
    for number, step in enumerate(scenario.steps):
        where = f"{path}: `$.steps[{number}]`"
        targets = getattr(step, "targets", None)
        if targets is not None:
            pick_targets(targets, scenario.nodes, f"{where}.targets")
        if isinstance(step, Deploy) and step.count < 1:
            raise ScenarioError(f"{where}.count: Expected >= 1, got {step.count}")
        if isinstance(step, Assert):
            if step.metric not in METRICS:
                raise ScenarioError(
                    f"{where}.metric: Expected one of {', '.join(sorted(METRICS))}, got {step.metric!r}"
                )
            if step.max is None and step.min is None:
                raise ScenarioError(f"{where}: an assert needs `max`, `min` or both")
    return scenario


# What an `assert` step can check (the runner's summary has every one of them).
METRICS = {
    "propagation_p50_ms": "deploy -> every reachable node serving it, median over the deploys",
    "propagation_p99_ms": "the same, 99th percentile",
    "convergence_p99_ms": "heal or origin start -> a node serving the last version, 99th percentile",
    "convergence_max_ms": "the same, slowest node",
    "failed_requests": "client requests inside the namespaces that got no 200",
    "connect_min_ms": "fastest TCP connect from a target's namespace to the origin",
    "connect_p50_ms": "median TCP connect from a target's namespace to the origin",
    "purge_max_ms": "purge -> every reachable node has applied it",
}
