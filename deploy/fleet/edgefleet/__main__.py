"""`python -m edgefleet run SCENARIO.toml [--nodes N] [--out FILE]` and `python -m edgefleet clean`."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path
from types import FrameType

from edgefleet.namespaces import clean_stale
from edgefleet.runner import Runner
from edgefleet.scenario import ScenarioError, load_scenario

_RUNNER = os.getpid()


def _interrupted(signum: int, frame: FrameType | None) -> None:
    # pyroute2 forks helpers (IPRoute(netns=...)) and ends them with SIGTERM: they inherit this
    # handler, and must exit rather than run the runner's clean-up as if they were it.
    if os.getpid() != _RUNNER:
        os._exit(128 + signum)
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="edgefleet", description="A fleet of edge nodes under network faults."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run a scenario file")
    run.add_argument("scenario", type=Path)
    run.add_argument("--nodes", type=int, help="fleet size (default: the scenario's)")
    run.add_argument("--out", type=Path, help="write the results as JSON here")
    run.add_argument(
        "--backend", choices=("netem", "nftables"), help="fault backend (default: what the kernel offers)"
    )
    commands.add_parser("clean", help="remove what runs that died left behind")
    args = parser.parse_args(argv)
    if args.command == "clean":
        for name in clean_stale():
            print(f"removed {name}")
        return 0
    try:
        scenario = load_scenario(args.scenario, args.nodes)
    except ScenarioError as exc:
        print(f"edgefleet: {exc}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _interrupted)
    signal.signal(signal.SIGHUP, _interrupted)
    results = Runner(scenario, args.out, args.backend).run()
    return 0 if results["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
