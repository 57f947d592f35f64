"""requirements.txt: `edge deploy` installs into the bundle's .deps/, and the isolate imports from it."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from node_harness import write_function

from edge.bundle import build, extract
from edge.node.functions import isolate_spec
from isolates.backends import RESPONSE
from isolates.manifest import load_manifest
from isolates.pool import IsolatePool


def test_dependencies_from_requirements_are_importable_in_the_isolate(tmp_path: Path) -> None:
    source = write_function(
        tmp_path / "src",
        "deps",
        """
        import six

        def handler(request):
            return {"six": six.__version__, "from": six.__file__.split("/.deps/")[0].rsplit("/", 1)[-1]}
        """,
        files={"requirements.txt": "six==1.16.0\n"},
    )
    bundle = build(source)
    directory = tmp_path / "bundles" / "v1"
    extract(bundle, directory, "deps")
    assert (directory / ".deps" / "six.py").is_file()

    async def body() -> None:
        pool = IsolatePool(lambda *line: None, warm_pool=0)
        try:
            spec = isolate_spec(directory, load_manifest(directory, "deps"), "v1")
            await pool.deploy("deps", [(spec, 100)])
            function = pool.get("deps")
            assert function is not None
            isolate = function.pick()
            assert isolate is not None
            reply = await isolate.submit("GET", "/deps", "", (), b"", "r1", time.monotonic() + 10)
            assert reply[0] == RESPONSE, reply
            assert reply[4] == b'{"six":"1.16.0","from":"v1"}'
        finally:
            await pool.close(5.0)

    asyncio.run(body())


def test_the_nodes_own_site_packages_are_not_importable(tmp_path: Path) -> None:
    directory = write_function(
        tmp_path,
        "isolated",
        """
        def handler(request):
            try:
                import msgspec  # installed for the node, not for functions
            except ImportError as exc:
                return f"refused: {exc.name}"
            return "leaked"
        """,
    )

    async def body() -> None:
        pool = IsolatePool(lambda *line: None, warm_pool=0)
        try:
            await pool.deploy("isolated", [(isolate_spec(directory, load_manifest(directory), "v1"), 100)])
            function = pool.get("isolated")
            assert function is not None
            isolate = function.pick()
            assert isolate is not None
            reply = await isolate.submit("GET", "/", "", (), b"", "r1", time.monotonic() + 10)
            assert reply[4] == b"refused: msgspec"
        finally:
            await pool.close(5.0)

    asyncio.run(body())
