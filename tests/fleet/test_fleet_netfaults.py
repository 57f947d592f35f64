"""The network-fault fleet harness (deploy/fleet/): scenario files, the 5-node smoke run, clean-up.

The smoke run is the small scenario `make test` runs: real nodes in their own network namespaces,
a delay that must show in TCP connect times, loss, a silent cut during deploys and its heal.
It needs root and what deploy/fleet/install-deps installs (`make test` runs it first).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FLEET = REPO / "deploy" / "fleet"
sys.path.insert(0, str(FLEET))

from edgefleet.namespaces import NETNS_DIR  # noqa: E402
from edgefleet.runner import Runner  # noqa: E402
from edgefleet.scenario import ScenarioError, load_scenario  # noqa: E402


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "scenario.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            'name = "x"\n[[steps]]\naction = "explode"\n',
            "Invalid value 'explode' - at `$.steps[0].action`",
        ),
        (
            'name = "x"\nnodes = 4\n[[steps]]\naction = "fault"\ntargets = "half"\n',
            '`$.steps[0]`.targets: Expected "all", "N%" (0 < N <= 100) or a list of node numbers,'
            " got 'half'",
        ),
        (
            'name = "x"\nnodes = 4\n[[steps]]\naction = "heal"\ntargets = [2, 7]\n',
            "`$.steps[0]`.targets: Expected node numbers 1..4, got [7]",
        ),
        (
            'name = "x"\n[[steps]]\naction = "fault"\nloss = 2\n',
            "Object contains unknown field `loss` - at `$.steps[0]`",
        ),
        (
            'name = "x"\n[[steps]]\naction = "assert"\nmetric = "p99"\nmax = 1\n',
            "`$.steps[0]`.metric: Expected one of connect_min_ms, connect_p50_ms, convergence_max_ms,"
            " convergence_p99_ms, failed_requests, propagation_p50_ms, propagation_p99_ms,"
            " purge_max_ms, got 'p99'",
        ),
        (
            'name = "x"\npoll_timeout_s = 0.5\n',
            "Expected 1 <= poll_timeout_s <= 60 (the node's range), got 0.5",
        ),
    ],
)
def test_a_bad_scenario_is_refused_with_the_file_and_the_place(
    tmp_path: Path, text: str, message: str
) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ScenarioError) as caught:
        load_scenario(path)
    assert str(caught.value).startswith(f"{path}: "), caught.value
    assert message in str(caught.value), caught.value


def test_every_shipped_scenario_loads() -> None:
    names = sorted(path.stem for path in (FLEET / "scenarios").glob("*.toml"))
    assert names == ["clean", "clean-100", "flap", "lossy", "lossy-100", "origin-down", "partition", "smoke"]
    for name in names:
        assert load_scenario(FLEET / "scenarios" / f"{name}.toml").name == name


def _ours(run_id: int) -> list[str]:
    return sorted(p.name for p in NETNS_DIR.glob(f"ef{run_id}-*")) if NETNS_DIR.is_dir() else []


def _requirements() -> None:
    if os.geteuid() != 0:
        raise AssertionError("the fleet harness needs root (network namespaces)")
    missing = [tool for tool in ("nft", "iptables", "nsenter") if shutil.which(tool) is None]
    if missing:
        raise AssertionError(f"missing {missing}: run deploy/fleet/install-deps .venv/bin/python")


@pytest.mark.netfleet
@pytest.mark.timeout(120)
def test_the_five_node_smoke_scenario() -> None:
    _requirements()
    lines: list[str] = []
    runner = Runner(load_scenario(FLEET / "scenarios" / "smoke.toml"), say=lines.append)
    results = runner.run()
    report = "\n".join(lines)
    assert [a["metric"] for a in results["assertions"]] == [
        "connect_min_ms",
        "failed_requests",
        "convergence_max_ms",
        "propagation_p99_ms",
    ], report
    assert all(a["ok"] for a in results["assertions"]), report
    assert results["ok"] and results["missed_deploys"] == [], report
    # The 100 ms delay on node 1's link shows in every TCP connect to the origin.
    assert len(results["connect_ms"]) == 5 and min(results["connect_ms"]) >= 85, report
    # The cut-off node's own clients were all answered; it came back and took the 3 deploys.
    assert results["requests"] > 50 and results["failed_requests"] == 0, report
    assert len(results["convergence_ms"]) == 1 and results["convergence_ms"][0] <= 3000, report
    assert len(results["propagation_ms"]) == 3 and len(results["purge_ms"]) == 1, report
    assert _ours(runner.network.run_id) == []  # every namespace removed


@pytest.mark.netfleet
@pytest.mark.timeout(120)
def test_an_interrupted_run_leaves_no_namespace_and_no_process(tmp_path: Path) -> None:
    _requirements()
    path = _write(tmp_path, 'name = "held"\nnodes = 2\n[[steps]]\naction = "wait"\nseconds = 120\n')
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(FLEET)])}
    run = subprocess.Popen(
        [sys.executable, "-m", "edgefleet", "run", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=REPO,
    )
    assert run.stdout is not None
    seen = []
    for line in run.stdout:
        seen.append(line)
        if "step 0: wait" in line:
            break
    namespaces = _ours(run.pid)
    assert namespaces == [f"ef{run.pid}-n1", f"ef{run.pid}-n2", f"ef{run.pid}-o"], "".join(seen)
    inodes = {(NETNS_DIR / name).stat().st_ino for name in namespaces}
    inside = [
        int(entry.name)
        for entry in Path("/proc").iterdir()
        if entry.name.isdigit() and _netns_inode(entry) in inodes
    ]
    assert len(inside) >= 3, inside  # the origin and two nodes at least
    run.send_signal(signal.SIGINT)
    output = run.communicate(timeout=60)[0]
    assert run.returncode != 0
    assert _ours(run.pid) == [], output
    alive = [pid for pid in inside if Path(f"/proc/{pid}").exists()]
    assert alive == [], output


def _netns_inode(entry: Path) -> int:
    try:
        return (entry / "ns" / "net").stat().st_ino
    except OSError:
        return 0
