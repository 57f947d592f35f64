"""Build the single-file edge artifacts (`make dist`): one shiv zipapp per CPU architecture.

For each architecture pip installs the project's wheel and the platform wheels of its dependencies
(CPython 3.13, manylinux up to glibc 2.41: Debian 13 and Raspberry Pi OS trixie) into a staging
site-packages, every native file there is checked to be an ELF file for that architecture, and
shiv zips it with `edge.cli:main` as the entry point. Wheels are cached per architecture
(--cache, default $EDGE_DIST_CACHE or ~/.cache/edge-dist): a build whose wheels are all cached
asks no index. Writes OUT/edge-ARCH.pyz, OUT/edge-deploy.tar.gz (install.sh and the units, for a
machine that has no checkout: deploy/cloud-init.yaml) and OUT/SHA256SUMS (`sha256sum -c` reads it).

    python deploy/dist.py [--out DIR] [--cache DIR] [--arch x86_64] [--arch aarch64]
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PYTHON_VERSION = "3.13"
# ELF e_machine of each architecture (the name is what `uname -m` prints on it).
MACHINES = {"x86_64": 62, "aarch64": 183}
# Debian 13 (trixie) ships glibc 2.41; manylinux_2_17 is manylinux2014.
GLIBC_MINORS = range(41, 16, -1)
ENTRY_POINT = "edge.cli:main"
# What install.sh needs beside the artifact, with their modes.
DEPLOY_FILES = {"install.sh": 0o755, "edge-node.service": 0o644, "edge-origin.service": 0o644}


class BuildError(Exception):
    """A step of the build failed; the message says which and why."""


def platforms(arch: str) -> list[str]:
    """pip's --platform arguments for a manylinux wheel that runs on Debian 13 on `arch`."""
    tags = [f"manylinux_2_{minor}_{arch}" for minor in GLIBC_MINORS] + [f"manylinux2014_{arch}"]
    return [arg for tag in tags for arg in ("--platform", tag)]


def elf_machine(path: Path) -> int | None:
    """The ELF e_machine of `path`, or None when it is not an ELF file."""
    with path.open("rb") as file:
        header = file.read(20)
    if len(header) < 20 or header[:4] != b"\x7fELF":
        return None
    return int.from_bytes(header[18:20], "little" if header[5] == 1 else "big")


def native_files(site: Path) -> list[Path]:
    """Every shared object under `site` (extension modules and the libraries wheels bundle)."""
    return sorted(p for p in site.rglob("*") if p.is_file() and (p.suffix == ".so" or ".so." in p.name))


def check_machine(site: Path, arch: str) -> int:
    """Raise unless every native file under `site` is an ELF file for `arch`; returns their count."""
    found = native_files(site)
    wrong = [
        f"{path.relative_to(site)} (e_machine {elf_machine(path)})"
        for path in found
        if elf_machine(path) != MACHINES[arch]
    ]
    if wrong:
        raise BuildError(
            f"{site}: native files not built for {arch} (e_machine {MACHINES[arch]}): {', '.join(wrong)}"
        )
    return len(found)


def run(step: str, argv: list[str]) -> subprocess.CompletedProcess[str]:
    """Run one build command; raise with its output when it fails."""
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        command = " ".join(argv)
        raise BuildError(f"{step} failed (exit status {result.returncode}): {command}\n{result.stderr}")
    return result


def project_wheel(work: Path) -> Path:
    """This checkout as a wheel (pure Python: one for every architecture)."""
    wheels = work / "project"
    pip = [sys.executable, "-m", "pip"]
    run("building the project's wheel", [*pip, "wheel", "--quiet", "--no-deps", "-w", str(wheels), str(REPO)])
    (wheel,) = wheels.glob("edge_functions-*.whl")
    return wheel


def install(wheel: Path, arch: str, site: Path, cache: Path) -> None:
    """Install `wheel` and its dependencies' `arch` wheels into `site`, downloading into `cache` once."""
    pip = [sys.executable, "-m", "pip"]
    target = [*platforms(arch), "--python-version", PYTHON_VERSION, "--implementation", "cp"]
    offline = [
        *pip,
        "install",
        "--quiet",
        "--no-compile",
        "--only-binary=:all:",
        *target,
        "--target",
        str(site),
        "--no-index",
        "--find-links",
        str(cache),
        str(wheel),
    ]
    if subprocess.run(offline, capture_output=True, check=False).returncode == 0:
        return
    cache.mkdir(parents=True, exist_ok=True)
    run(
        f"downloading the {arch} wheels",
        [*pip, "download", "--quiet", "--only-binary=:all:", *target, "-d", str(cache), str(wheel)],
    )
    # The cache holds dependencies only: the project's wheel is built fresh each time.
    for stale in cache.glob("edge_functions-*.whl"):
        stale.unlink()
    shutil.rmtree(site, ignore_errors=True)
    run(f"installing the {arch} wheels", offline)


def scrub(site: Path) -> None:
    """Remove what names this build machine, so the same sources and wheels give the same artifact."""
    # Console scripts with this machine's interpreter in their shebang: the zipapp has its entry point.
    shutil.rmtree(site / "bin", ignore_errors=True)
    # The temporary path the project's wheel was installed from, and its line in RECORD.
    for direct_url in site.glob("*.dist-info/direct_url.json"):
        direct_url.unlink()
        record = direct_url.with_name("RECORD")
        name = f"{direct_url.parent.name}/direct_url.json,"
        lines = record.read_text().splitlines(keepends=True)
        record.write_text("".join(line for line in lines if not line.startswith(name)))


def build(arch: str, wheel: Path, out: Path, cache: Path, work: Path) -> Path:
    """Build OUT/edge-ARCH.pyz; returns its path."""
    site = work / f"site-{arch}"
    install(wheel, arch, site, cache / arch)
    scrub(site)
    check_machine(site, arch)
    artifact = out / f"edge-{arch}.pyz"
    run(
        f"zipping the {arch} artifact",
        [
            sys.executable,
            "-m",
            "shiv",
            "--site-packages",
            str(site),
            "--entry-point",
            ENTRY_POINT,
            "--python",
            "/usr/bin/env python3",
            "--output-file",
            str(artifact),
            "--compressed",
            "--compile-pyc",
            "--reproducible",
        ],
    )
    return artifact


def deploy_tarball(out: Path) -> Path:
    """OUT/edge-deploy.tar.gz: deploy/install.sh and the units, byte for byte the same each time."""
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, mode in DEPLOY_FILES.items():
            content = (REPO / "deploy" / name).read_bytes()
            info = tarfile.TarInfo(f"deploy/{name}")
            info.size, info.mode, info.uname, info.gname = len(content), mode, "root", "root"
            tar.addfile(info, io.BytesIO(content))
    tarball = out / "edge-deploy.tar.gz"
    tarball.write_bytes(gzip.compress(data.getvalue(), mtime=0))
    return tarball


def write_sums(out: Path, artifacts: list[Path]) -> Path:
    """OUT/SHA256SUMS for `artifacts` (in `sha256sum`'s format), replacing their old lines only."""
    sums = out / "SHA256SUMS"
    lines: dict[str, str] = {}
    if sums.exists():
        for line in sums.read_text().splitlines():
            digest, _, name = line.partition("  ")
            if name and (out / name).exists():
                lines[name] = digest
    for artifact in artifacts:
        lines[artifact.name] = hashlib.sha256(artifact.read_bytes()).hexdigest()
    tmp = sums.with_suffix(".tmp")
    tmp.write_text("".join(f"{digest}  {name}\n" for name, digest in sorted(lines.items())))
    tmp.replace(sums)
    return sums


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments, build each architecture's artifact and the checksum file."""
    parser = argparse.ArgumentParser(prog="deploy/dist.py", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "dist", help="output directory (default: dist/)")
    default_cache = os.environ.get("EDGE_DIST_CACHE") or str(Path.home() / ".cache" / "edge-dist")
    parser.add_argument("--cache", type=Path, default=Path(default_cache), help="wheel cache directory")
    parser.add_argument("--arch", action="append", choices=sorted(MACHINES), help="default: every one")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        with tempfile.TemporaryDirectory(prefix="edge-dist-") as tmp:
            work = Path(tmp)
            wheel = project_wheel(work)
            arches = args.arch or sorted(MACHINES)
            artifacts = [build(arch, wheel, args.out, args.cache, work) for arch in arches]
        artifacts.append(deploy_tarball(args.out))
        sums = write_sums(args.out, artifacts)
    except BuildError as exc:
        print(f"deploy/dist.py: error: {exc}", file=sys.stderr)
        return 1
    for artifact in artifacts:
        print(f"{artifact} ({artifact.stat().st_size:,} bytes)")
    print(sums)
    return 0


if __name__ == "__main__":
    sys.exit(main())
