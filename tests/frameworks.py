"""Fill a function directory's `.deps/` from this venv: no network at test time.

`edge deploy` pip-installs a function's requirements.txt into `.deps/`; tests copy the installed
distributions instead (flask, starlette, fastapi are in the `test` extras), every file their
RECORD lists, with the closure of what they require. The node puts `.deps/` on the isolate's
sys.path (isolates/backends/subinterpreter.py and process.py, `assign`).
"""

from __future__ import annotations

import shutil
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

__all__ = ["closure", "install"]


def closure(*names: str) -> list[metadata.Distribution]:
    """The installed distributions `names` and everything they require here (extras left out)."""
    found: dict[str, metadata.Distribution] = {}
    wanted = [(name, "") for name in names]
    while wanted:
        name, needed_by = wanted.pop()
        key = canonicalize_name(name)
        if key in found:
            continue
        try:
            distribution = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            by = f" (required by {needed_by})" if needed_by else ""
            raise LookupError(
                f"distribution {name!r}{by} is not installed in this venv; expected it from "
                "pyproject's test extras: run `pip install -e '.[test]'`"
            ) from None
        found[key] = distribution
        for text in distribution.requires or ():
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                wanted.append((requirement.name, distribution.metadata["Name"]))
    return sorted(found.values(), key=lambda d: canonicalize_name(d.metadata["Name"]))


def install(directory: Path, *names: str) -> list[str]:
    """Copy `names` and their closure into `directory/.deps`; returns the distributions' names."""
    deps = directory / ".deps"
    distributions = closure(*names)
    for distribution in distributions:
        root = Path(str(distribution.locate_file(""))).resolve()
        for file in distribution.files or ():
            source = Path(str(distribution.locate_file(file))).resolve()
            if not source.is_relative_to(root) or not source.is_file():
                continue  # console scripts in bin/, files RECORD lists but pip did not keep
            target = deps / source.relative_to(root)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return [distribution.metadata["Name"] for distribution in distributions]
