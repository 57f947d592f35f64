"""How this process starts `edge` again (a re-exec, `edge up`'s children): venv or zipapp alike."""

from __future__ import annotations

import os
import sys
import zipfile

__all__ = ["edge_argv"]


def edge_argv() -> list[str]:
    """`python -m edge`, or `python ARCHIVE` when running from the single-file artifact (make dist).

    The artifact's packages are on sys.path only after its bootstrap ran, so `-m edge` would not
    find them in a new interpreter; the archive path is what shiv's bootstrap reads (sys.argv[0]).
    """
    if zipfile.is_zipfile(sys.argv[0]):
        return [sys.executable, os.path.abspath(sys.argv[0])]
    return [sys.executable, "-m", "edge"]
