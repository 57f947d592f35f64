"""The bounds on what one manifest may carry, at a real origin: defaults, the settings that change
them, and a refusal that leaves the deployed version alone."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from origin_harness import Origin, file_member, good_members, run_edge, running_origin, tar_gz, write_function

from edge import bundle
from edge.control.client import OriginError


@pytest.fixture(scope="module")
def defaults(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Origin]:
    """An origin with the default limits and bounds."""
    with running_origin(tmp_path_factory.mktemp("bounds-defaults") / "data") as origin:
        yield origin


def _refused(origin: Origin, manifest: bytes) -> OriginError:
    with pytest.raises(OriginError) as caught:
        origin.admin().deploy("bounded", tar_gz(file_member("edge.toml", manifest), good_members()[1]))
    return caught.value


def test_a_20_mb_env_and_200000_routes_are_refused_before_they_are_decoded(defaults: Origin) -> None:
    """The manifests that took a node from 100 to 303 MB: refused with 400, never stored or sent."""
    env = b'[env]\nBIG = "' + b"x" * (20 * 1024 * 1024) + b'"\n'
    routes = ("routes = [" + ", ".join(f'"/r{i}"' for i in range(200_000)) + "]\n").encode()
    for manifest in (env, routes):
        error = _refused(defaults, manifest)
        assert (error.status, error.message) == (
            400,
            f"edge.toml: Expected at most 262144 bytes, got {len(manifest)} bytes; keep large data in files"
            " of the bundle (or raise the origin's --max-manifest-bytes)",
        )
    assert defaults.admin().functions() == []
    assert defaults.admin().health().revision == 0  # nothing was stored; the origin still answers


def test_the_origin_settings_change_the_bounds(tmp_path: Path) -> None:
    flags = ("--max-manifest-bytes", "200", "--max-env-bytes", "16", "--max-routes", "2")
    with running_origin(tmp_path / "data", *flags) as origin:
        directory = write_function(tmp_path / "bounded", manifest='routes = ["/a", "/b"]\n[env]\nK = "v"\n')
        deployed = origin.admin().deploy("bounded", bundle.pack(directory))
        error = _refused(origin, b'routes = ["/a", "/b", "/c"]\n')
        assert (error.status, error.message) == (
            400,
            "edge.toml: Expected at most 2 routes, got 3 - at `$.routes`; route a shared prefix instead"
            " of each path (or raise the origin's --max-routes)",
        )
        error = _refused(origin, b'[env]\nKEY = "0123456789abcdef"\n')
        assert (error.status, error.message) == (
            400,
            "edge.toml: Expected [env] names and values of at most 16 bytes together, got 19 bytes"
            " - at `$.env`; keep large values in files of the bundle (or raise the origin's --max-env-bytes)",
        )
        error = _refused(origin, b"# " + b"x" * 200 + b"\n")
        assert error.message.startswith("edge.toml: Expected at most 200 bytes, got 203 bytes;")
        # What was deployed before the refusals is still the release.
        [function] = origin.admin().functions()
        assert [r.version for r in function.releases] == [deployed.version]


def test_a_bad_bound_setting_is_refused(tmp_path: Path) -> None:
    result = run_edge("origin", "--data", str(tmp_path / "data"), "--max-routes", "lots")
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == (
        "edge origin: error: argument --max-routes: Expected an integer >= 1, got 'lots'"
    )
