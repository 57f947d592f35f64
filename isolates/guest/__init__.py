"""Code that runs inside an isolate: standard library only, never imports the host's packages.

The host puts this directory on each isolate's `sys.path`, so the modules here are imported
there as top-level modules (`edgefn`, `_edge_runtime`, `_edge_compat`).
"""

from pathlib import Path

__all__ = ["GUEST_DIR"]

GUEST_DIR = Path(__file__).resolve().parent
