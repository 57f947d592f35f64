"""How tests get a browser: Debian's Chromium, installed with apt when missing, driven by Playwright.

Playwright (a test extra) is pointed at the system's executable with `executable_path`; it never
downloads browsers of its own. Chromium is found on PATH (`chromium`, `chromium-browser`) or, as
root on Debian, installed with `apt-get update && apt-get install -y chromium` once per session.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

__all__ = ["INSTALL_TIMEOUT_S", "artifacts_dir", "chromium_executable", "install_chromium"]

NAMES = ("chromium", "chromium-browser")
INSTALL_TIMEOUT_S = 600


def chromium_executable() -> str | None:
    """The path of a Chromium on PATH, or None."""
    for name in NAMES:
        found = shutil.which(name)
        if found is not None:
            return found
    return None


def install_chromium() -> str:
    """Chromium's path, installing Debian's package first when none is on PATH.

    Raises RuntimeError naming the command that failed, its output and how to install it by hand.
    """
    found = chromium_executable()
    if found is not None:
        return found
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        raise RuntimeError(
            "no chromium or chromium-browser on PATH, and this is not root on a machine with apt-get: "
            "install Chromium (Debian: `apt-get install -y chromium`) and run the browser tests again"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (
        ["apt-get", "update"],
        ["apt-get", "install", "-y", "--no-install-recommends", "chromium"],
    ):
        result = subprocess.run(
            command, capture_output=True, text=True, env=env, timeout=INSTALL_TIMEOUT_S, check=False
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"`{' '.join(command)}` exited with {result.returncode}:\n{result.stdout[-2000:]}"
                f"{result.stderr[-2000:]}\ninstall Chromium by hand (`apt-get install -y chromium`) "
                "and run the browser tests again"
            )
    found = chromium_executable()
    if found is None:
        raise RuntimeError("`apt-get install -y chromium` succeeded but no chromium is on PATH")
    return found


def artifacts_dir(tmp_path: Path) -> list[Path]:
    """Where a test saves what a person should look at: `tmp_path/artifacts`, and also
    `$EDGE_TEST_ARTIFACTS` when that is set (made if missing)."""
    places = [tmp_path / "artifacts"]
    extra = os.environ.get("EDGE_TEST_ARTIFACTS")
    if extra:
        places.append(Path(extra))
    for place in places:
        place.mkdir(parents=True, exist_ok=True)
    return places


if __name__ == "__main__":
    print(install_chromium())
