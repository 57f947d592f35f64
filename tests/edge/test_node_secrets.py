"""The node token never sits where a function can read it: argv, the environment, the handoff.

Real processes: an origin and a node in origin mode given the token by --token-file, by EDGE_TOKEN
and by the deprecated --token; the kernel's copies of every node process's command line and
environment (/proc/PID/cmdline, /proc/PID/environ) are read and must not hold the token, while the
node syncs with it. The settings handoff to workers is tested for both start methods.
"""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fleet.fleet_harness import Fleet, Node, run_edge, wait_for, write_version

from edge.cli.node import TOKEN_WARNING
from edge.node import handoff
from edge.node.settings import NodeSettings

SPY = """\
    import os

    def _read(path):
        try:
            with open(path, "rb") as file:
                return file.read().decode(errors="replace")
        except OSError as exc:  # the audit hook may refuse: also fine
            return f"refused: {type(exc).__name__}"

    def handler(request):
        return {
            "environ": sorted(os.environ),
            "proc_environ": _read("/proc/self/environ"),
            "proc_cmdline": _read("/proc/self/cmdline"),
            "parent_environ": _read(f"/proc/{os.getppid()}/environ"),
            "parent_cmdline": _read(f"/proc/{os.getppid()}/cmdline"),
        }
"""


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    running = Fleet(tmp_path)
    try:
        yield running
    finally:
        running.close()


def descendants(pid: int) -> list[int]:
    """`pid` and every process below it (granian's workers, their children)."""
    found = [pid]
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            children = (task / "children").read_text().split()
        except FileNotFoundError:  # a thread that just ended
            continue
        for child in children:
            found += descendants(int(child))
    return found


def exposed(pid: int, token: str) -> list[str]:
    """Which of the process's kernel copies (cmdline, environ) hold `token`."""
    return [
        f"/proc/{pid}/{name}"
        for name in ("cmdline", "environ")
        if token.encode() in Path(f"/proc/{pid}/{name}").read_bytes()
    ]


def check_node(fleet: Fleet, node: Node, tmp_path: Path, supervised: bool = False) -> None:
    """The node syncs (it holds the token) and no process of it shows the token; nor does a function.

    A node is one process by default (edge/node/embedded.py); `supervised`: granian's main
    process and one worker (`supervise = true`)."""
    processes = descendants(node.pid)
    assert len(processes) == (2 if supervised else 1), processes
    assert [place for pid in processes for place in exposed(pid, node.token)] == []
    directory, version = write_version(tmp_path / "spy", "spy", name="spy", code=SPY)
    assert fleet.origin is not None
    deployed = run_edge("deploy", str(directory), env=fleet.origin.env())
    assert deployed.returncode == 0, deployed.stderr
    wait_for(lambda: node.get("/spy").status == 200, 20, "the spy function to serve")
    seen = node.get("/spy").json()
    assert [name for name in seen["environ"] if name.startswith("EDGE_")] == []
    for place in ("proc_environ", "proc_cmdline", "parent_environ", "parent_cmdline"):
        assert node.token not in seen[place], place
    assert version in node.ready()["functions"]["spy"]["versions"]
    # Still none after syncing and serving (a worker that took its settings late would show here).
    processes = descendants(node.pid)
    assert [place for pid in processes for place in exposed(pid, node.token)] == []


def test_a_token_file_stays_out_of_every_process(fleet: Fleet, tmp_path: Path) -> None:
    fleet.start_origin()
    node = fleet.start_node(token_via="file")
    check_node(fleet, node, tmp_path)
    assert TOKEN_WARNING not in node.output()


def test_a_token_file_stays_out_of_every_process_of_a_supervised_node(fleet: Fleet, tmp_path: Path) -> None:
    origin = fleet.start_origin()
    node = Node(origin, origin.node_token(), tmp_path / "node", tmp_path / "node.log", None, token_via="file")
    node.environ["EDGE_SUPERVISE"] = "true"
    fleet.nodes.append(node)
    node.start()
    check_node(fleet, node, tmp_path, supervised=True)


def test_edge_token_in_the_environment_is_dropped_by_a_re_exec(fleet: Fleet, tmp_path: Path) -> None:
    origin = fleet.start_origin()
    token = origin.node_token()
    node = Node(origin, token, tmp_path / "node", tmp_path / "node.log", None, token_via="env")
    # A copy under a name no scrub_env pattern matches goes too: the value is what counts.
    node.environ["NODE_CREDENTIAL"] = token
    fleet.nodes.append(node)
    node.start()
    # The same pid now runs a clean image: no EDGE_* variable is left in the kernel's copy.
    environ = Path(f"/proc/{node.pid}/environ").read_bytes().split(b"\0")
    assert [entry for entry in environ if entry.startswith(b"EDGE_")] == []
    assert b"--settings-fd" in Path(f"/proc/{node.pid}/cmdline").read_bytes()
    check_node(fleet, node, tmp_path)


def test_token_on_the_command_line_warns_and_is_dropped_by_a_re_exec(fleet: Fleet, tmp_path: Path) -> None:
    fleet.start_origin()
    node = fleet.start_node(token_via="argv")
    assert TOKEN_WARNING in node.output()
    check_node(fleet, node, tmp_path)


def test_a_missing_token_file_is_refused_with_its_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    result = run_edge("node", "--origin", "http://127.0.0.1:1", "--token-file", str(missing))
    assert result.returncode == 2
    assert result.stderr == (
        f"error: {missing}: cannot read the node token: No such file or directory - at `$.token_file`\n"
    )


def test_token_and_token_file_together_are_refused(tmp_path: Path) -> None:
    result = run_edge(
        "node", "--origin", "http://127.0.0.1:1", "--token", "t", "--token-file", str(tmp_path / "t")
    )
    assert result.returncode == 2
    assert result.stderr.endswith(
        "error: command line: Expected either `token` or `token_file`, got both"
        " - at `$.token` and `$.token_file`\n"
    )


# The handoff to granian's workers, for both start methods granian uses.

SETTINGS = NodeSettings(origin="http://origin.test:8700", token="handoff-secret")


def _worker(name: str, results: multiprocessing.Queue[tuple[str, str]]) -> None:
    """What a granian worker does, then what a function in it and a function's subprocess could."""
    settings = handoff.receive()
    results.put(("first", settings.token if settings is not None else ""))
    os.environ[handoff.SOCKET_VARIABLE] = name
    try:
        handoff.receive()
    except handoff.HandoffError as exc:
        results.put(("again", str(exc)))
    code = "from edge.node import handoff as h\ntry:\n h.receive()\nexcept h.HandoffError as e:\n print(e)"
    env = {**os.environ, handoff.SOCKET_VARIABLE: name}
    child = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    results.put(("grandchild", child.stdout.strip()))


@pytest.mark.parametrize("method", ["spawn", "fork"])
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_each_worker_gets_the_settings_once_and_nobody_else(method: str) -> None:
    offer = handoff.offer(SETTINGS)
    try:
        context = multiprocessing.get_context(method)
        results: multiprocessing.Queue[tuple[str, str]] = context.Queue()
        worker = context.Process(target=_worker, args=(offer.name, results))
        worker.start()
        got = dict(results.get(timeout=30) for _ in range(3))
        worker.join(30)
    finally:
        offer.close()
    refused = (
        f"{handoff.SOCKET_VARIABLE}={offer.name}: the node's main process refused this process"
        " (only its own workers get the settings, once each)"
    )
    assert got == {"first": "handoff-secret", "again": refused, "grandchild": refused}
    assert worker.exitcode == 0
