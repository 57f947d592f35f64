"""`edge init`: a new function directory that deploys, serves and passes its own test."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from edge.cli._abort import abort
from edge.cli._templates import KINDS, render
from isolates.manifest import ManifestError, decode_manifest

__all__ = ["register"]


def register(subparsers: Any) -> None:
    """Add `edge init`."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "init",
        help="create a function directory (edge.toml, main.py, test_main.py)",
        description="Write PARENT/NAME: a working handler of the kind and a test that uses edgefn.testing.",
    )
    parser.add_argument("name", metavar="NAME", help="the function's name and its URL path /NAME")
    parser.add_argument("--kind", choices=KINDS, default="edge", help="the handler kind (default edge)")
    parser.add_argument(
        "--dir", type=Path, default=Path(), metavar="PARENT", help="where to create NAME/ (default .)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Write the directory; refuses a bad name or an existing path."""
    name: str = args.name
    files = render(name, args.kind)
    try:  # the name is checked by the manifest's own rules, on the manifest about to be written
        decode_manifest(files["edge.toml"], "NAME", name)
    except ManifestError as exc:
        abort(str(exc))
    directory: Path = args.dir / name
    if directory.exists() or directory.is_symlink():
        abort(f"{directory}: already exists; edge init writes a new directory: pick another NAME or --dir")
    try:
        directory.mkdir(parents=True)
        for filename, text in files.items():
            (directory / filename).write_text(text)
    except OSError as exc:
        abort(f"{directory}: cannot create the function: {exc.strerror or exc}")
    print(f"created {directory}/ ({args.kind}): {', '.join(files)}")
    print(f"  test:   cd {directory} && python -m pytest")
    print(f"  serve:  edge node --functions {args.dir}")
    print(f"  call:   edge invoke {name} --path '?name=Ada'")
    print(f"  deploy: edge deploy {directory}")
    return 0
