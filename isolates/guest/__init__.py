"""Code that runs inside an isolate: standard library only, never imports the host's packages.

The host puts this directory on each isolate's `sys.path`, so the modules here are imported
there as top-level modules (`edgefn`, `_edge_runtime`, `_edge_compat`). `compile_guest` (host
side) writes their bytecode cache: an isolate that had to compile them would hold the compiler's
leftovers, ≈ 0.6 MiB more per instance.
"""

from pathlib import Path

__all__ = ["GUEST_DIR", "compile_guest"]

GUEST_DIR = Path(__file__).resolve().parent


def compile_guest(directory: Path = GUEST_DIR) -> str | None:
    """Byte-compile the modules under `directory` whose cache is missing or stale.

    Written even when PYTHONDONTWRITEBYTECODE is set (a cache of the node's own code, like the one
    pip writes at install). Returns None, or what could not be written and what it costs.
    """
    import importlib.util
    import py_compile

    for source in sorted(directory.rglob("*.py")):
        cached = Path(importlib.util.cache_from_source(str(source)))
        try:
            if cached.stat().st_mtime_ns >= source.stat().st_mtime_ns:
                continue
        except FileNotFoundError:
            pass
        try:
            py_compile.compile(str(source), cfile=str(cached), doraise=True)
        except (OSError, py_compile.PyCompileError) as exc:
            return (
                f"{source}: cannot write its bytecode cache {cached} ({exc}); every isolate compiles"
                " the guest runtime instead (slower cold starts, ≈ 0.6 MiB more per instance): run"
                f" `python -m compileall {directory}` as the owner of the installation"
            )
    return None
