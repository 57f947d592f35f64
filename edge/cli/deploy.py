"""`edge deploy`, `ls`, `versions`, `rollback`, `promote`, `rm`, `nodes`, `purge`: talk to the origin."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import NoReturn

from edge import bundle
from edge.cli._abort import abort
from edge.cli._args import percent
from edge.cli._origin import add_origin_options, origin_client, print_json
from edge.cli._wait import (
    Applied,
    Bar,
    Failure,
    Outcome,
    add_wait_options,
    ago,
    failed_to_load,
    problem,
    tally,
    wait,
)
from edge.control.admin import ReleaseResult, Removed
from edge.control.client import ControlError, OriginClient
from edge.control.messages import PurgeKind, Release
from isolates.manifest import ManifestError, load_manifest

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the commands that use the origin's admin API."""
    common = argparse.ArgumentParser(add_help=False)
    add_origin_options(common)
    common.add_argument("--json", action="store_true", help="print JSON for scripts")
    waiting = argparse.ArgumentParser(add_help=False)
    add_wait_options(waiting)

    add = subparsers.add_parser
    deploy = add("deploy", parents=[common, waiting], help="upload a function directory as a new version")
    deploy.add_argument("directory", type=Path, help="the function directory (with edge.toml)")
    deploy.add_argument("--canary", type=percent, metavar="PERCENT", help="send only this share to it")
    deploy.add_argument(
        "--platform", help="pip platform tag for requirements.txt (e.g. manylinux2014_aarch64)"
    )
    deploy.add_argument(
        "--force",
        action="store_true",
        help="take routes another function claims (the origin refuses otherwise)",
    )
    deploy.add_argument(
        "--rollback-on-failure",
        action="store_true",
        help="implies --wait: when a node fails to load the new version, restore the previous release",
    )
    deploy.set_defaults(func=_deploy)

    add("ls", parents=[common], help="list functions and their releases").set_defaults(func=_ls)
    versions = add("versions", parents=[common], help="list the kept versions of a function")
    versions.add_argument("name")
    versions.set_defaults(func=_versions)
    rollback = add("rollback", parents=[common, waiting], help="go back to the previous version")
    rollback.add_argument("name")
    rollback.add_argument("--to", metavar="VERSION", help="a version digest or a unique prefix of one")
    rollback.set_defaults(func=_rollback)
    promote = add("promote", parents=[common, waiting], help="give the canary 100%% of the traffic")
    promote.add_argument("name")
    promote.set_defaults(func=_promote)
    remove = add("rm", parents=[common, waiting], help="remove a function and its versions")
    remove.add_argument("name")
    remove.set_defaults(func=_rm)
    add("nodes", parents=[common], help="list nodes and what they have applied").set_defaults(func=_nodes)
    purge = add("purge", parents=[common, waiting], help="purge a function's responses from edge caches")
    purge.add_argument("name")
    what = purge.add_mutually_exclusive_group(required=True)
    what.add_argument("--path", help="one path")
    what.add_argument("--prefix", help="every path under this prefix")
    what.add_argument("--tag", help="every response tagged with this")
    what.add_argument("--all", action="store_true", help="everything the function cached")
    purge.set_defaults(func=_purge)


def _client(args: argparse.Namespace) -> OriginClient:
    return origin_client(args)


def _short(version: str) -> str:
    return version[:12]


def _releases(releases: Sequence[Release]) -> str:
    return ", ".join(f"{_short(r.version)} {r.weight}%" for r in releases)


def _when(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB"):
        if value < 1024 or unit == "MiB":
            return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns padded to their widest cell, two spaces apart, no trailing blanks."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=False)]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [headers, *rows]
    ]
    return "\n".join(lines)


def _fail(exc: ControlError) -> NoReturn:
    abort(str(exc))


def _deploy(args: argparse.Namespace) -> int:
    directory: Path = args.directory
    if not directory.is_dir():
        abort(f"{directory}: not a directory; `edge deploy` takes a function directory")
    try:
        manifest = load_manifest(directory)
        data = bundle.build(directory, platform=args.platform)
    except (ManifestError, bundle.BundleError) as exc:
        abort(str(exc))
    client = _client(args)
    bar = Bar(f"uploading {manifest.name}")
    try:
        result = client.deploy(
            manifest.name,
            data,
            args.canary,
            progress=lambda done, total: bar.update(done, total, _size(total)),
            force=args.force,
        )
    except ControlError as exc:
        bar.done()
        _fail(exc)
    bar.done()
    wait_for = args.wait or args.rollback_on_failure
    if args.json and not wait_for:
        print_json(result)
    elif not args.json:
        print(
            f"deployed {result.name} {_short(result.version)} at revision {result.revision}: "
            f"{_releases(result.releases)}"
        )
        for took in result.took:
            print(f"{result.name} took route {took} (--force)")
    if wait_for:
        what = f"revision {result.revision}"
        outcomes = wait(
            client, args, what, _applied(result.revision), failed_to_load(result.name, [result.version])
        )
        error = problem(outcomes, what)
        if error is not None and args.rollback_on_failure and any(o.state == "failed" for o in outcomes):
            error += "; " + _roll_back(client, result)
        _finish(args, result, outcomes, what, error)
    return 0


def _roll_back(client: OriginClient, failed: ReleaseResult) -> str:
    """Restore the release before `failed` (--rollback-on-failure); says what happened."""
    try:
        result = client.rollback(failed.name)
    except ControlError as exc:
        return f"could not roll back {failed.name}: {exc}"
    return (
        f"rolled back {failed.name} to {_releases(result.releases)} at revision {result.revision}"
        " (--rollback-on-failure)"
    )


def _applied(revision: int) -> Applied:
    return lambda node: node.report is not None and node.report.applied_revision >= revision


def _finish(
    args: argparse.Namespace, result: object, outcomes: Sequence[Outcome], what: str, error: str | None
) -> None:
    """After --wait: abort with `error`, or print the tally (and the JSON result)."""
    if error is not None:
        abort(error)
    if args.json:
        print_json(result)
    else:
        print(tally(outcomes, what, args.seen_within))


def _ls(args: argparse.Namespace) -> int:
    try:
        functions = _client(args).functions()
    except ControlError as exc:
        _fail(exc)
    if args.json:
        print_json(functions)
        return 0
    if not functions:
        print("no functions deployed")
        return 0
    rows = [
        [
            f.name,
            _releases(f.releases),
            str(f.versions),
            " ".join(f.routes) or "-",
            _when(f.updated_at),
            "; ".join(f"{_short(v)} on {', '.join(nodes)}" for v, nodes in f.failed.items()) or "-",
        ]
        for f in functions
    ]
    print(table(["NAME", "RELEASES", "VERSIONS", "ROUTES", "UPDATED (UTC)", "FAILED TO LOAD"], rows))
    return 0


def _versions(args: argparse.Namespace) -> int:
    try:
        detail = _client(args).function(args.name)
    except ControlError as exc:
        _fail(exc)
    if args.json:
        print_json(detail)
        return 0
    stable = detail.releases[0].version if detail.releases else None
    rows = []
    for v in detail.versions:
        traffic = "-" if not v.weight else f"{v.weight}% " + ("stable" if v.version == stable else "canary")
        failed = f"on {', '.join(v.failed_on)}" if v.failed_on else "-"
        rows.append([_short(v.version), _when(v.created_at), _size(v.size), traffic, failed])
    print(table(["VERSION", "CREATED (UTC)", "SIZE", "TRAFFIC", "FAILED TO LOAD"], rows))
    return 0


def _release_command(
    args: argparse.Namespace, verb: str, call: Callable[[OriginClient], ReleaseResult | Removed]
) -> int:
    client = _client(args)
    try:
        result = call(client)
    except ControlError as exc:
        _fail(exc)
    revision = result.revision
    if args.json and not args.wait:
        print_json(result)
    elif not args.json:
        tail = f": {_releases(result.releases)}" if isinstance(result, ReleaseResult) else ""
        print(f"{verb} {args.name} at revision {revision}{tail}")
    if args.wait:
        failure: Failure = lambda node: None  # noqa: E731
        if isinstance(result, ReleaseResult):
            failure = failed_to_load(result.name, [release.version for release in result.releases])
        what = f"revision {revision}"
        outcomes = wait(client, args, what, _applied(revision), failure)
        _finish(args, result, outcomes, what, problem(outcomes, what))
    return 0


def _rollback(args: argparse.Namespace) -> int:
    return _release_command(args, "rolled back", lambda client: client.rollback(args.name, args.to))


def _promote(args: argparse.Namespace) -> int:
    return _release_command(args, "promoted", lambda client: client.promote(args.name))


def _rm(args: argparse.Namespace) -> int:
    return _release_command(args, "removed", lambda client: client.remove(args.name))


def _purge(args: argparse.Namespace) -> int:
    kind: PurgeKind
    if args.all:
        kind, value = "all", ""
    elif args.path is not None:
        kind, value = "path", args.path
    elif args.prefix is not None:
        kind, value = "prefix", args.prefix
    else:
        kind, value = "tag", args.tag
    client = _client(args)
    try:
        result = client.purge(args.name, kind, value)
    except ControlError as exc:
        _fail(exc)
    if args.json and not args.wait:
        print_json(result)
    elif not args.json:
        target = "everything" if kind == "all" else f"{kind} {value}"
        print(f"purge order {result.id} for {result.function} ({target}) at revision {result.revision}")
    if args.wait:
        what = f"purge order {result.id}"
        outcomes = wait(
            client,
            args,
            what,
            lambda node: node.report is not None and node.report.applied_purge_id >= result.id,
        )
        _finish(args, result, outcomes, what, problem(outcomes, what))
    return 0


def _nodes(args: argparse.Namespace) -> int:
    try:
        listing = _client(args).nodes()
    except ControlError as exc:
        _fail(exc)
    if args.json:
        print_json(listing)
        return 0
    if not listing.nodes:
        print("no nodes registered")
        return 0
    now = time.time()
    rows = []
    for node in listing.nodes:
        report = node.report
        problems = [f"{f.name}: {f.error}" for f in report.functions if f.error] if report else []
        problems += report.errors if report else []
        rows.append(
            [
                node.info.node_id,
                node.info.hostname,
                ago(now - node.last_seen),
                str(report.applied_revision) if report else "-",
                "live" if node.live else "not live",
                "; ".join(problems) or "-",
            ]
        )
    print(table(["NODE", "HOSTNAME", "LAST SEEN", "REVISION", "STATUS", "ERRORS"], rows))
    return 0
