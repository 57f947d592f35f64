"""A function bundle: the function directory as a deterministic tar.gz, named by its sha256."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import os
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
import zlib
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import msgspec

from edge.entrypoint_check import entrypoint_problem
from isolates.manifest import MANIFEST_NAME, Manifest, ManifestError, decode_manifest

__all__ = [
    "DEFAULT_LIMITS",
    "DEPS_DIR",
    "BundleError",
    "Limits",
    "ManifestBounds",
    "build",
    "clear_bytecode",
    "compile_bytecode",
    "digest",
    "extract",
    "install_requirements",
    "pack",
    "read_member",
    "remove_tree",
    "replace_tree",
    "seal",
    "validate",
    "verify_tree",
]

DEPS_DIR = ".deps"
_SKIP_DIRS = frozenset({"__pycache__", ".git"})
_SKIP_SUFFIXES = (".pyc",)
_CHUNK = 1 << 16
_PYCACHE = "__pycache__"
# Unpacked bundles are read-only: functions (and anyone else) must not change the code that serves.
_FILE_MODE, _EXEC_MODE, _DIR_MODE = 0o444, 0o555, 0o555


class BundleError(ValueError):
    """A bundle that cannot be used; the message names the member and what is wrong with it."""


class Limits(msgspec.Struct, frozen=True, kw_only=True):
    """How big a bundle may be: compressed bytes, unpacked bytes and number of members."""

    max_bytes: int = 64 * 1024 * 1024
    max_unpacked_bytes: int = 256 * 1024 * 1024
    max_members: int = 20_000


DEFAULT_LIMITS = Limits()


class ManifestBounds(msgspec.Struct, frozen=True, kw_only=True):
    """What one `edge.toml` may carry (checked at the origin's upload: nodes get it in every state)."""

    max_manifest_bytes: int = 256 * 1024
    # Names and values of `[env]` together, UTF-8 bytes.
    max_env_bytes: int = 64 * 1024
    max_routes: int = 1000


def digest(data: bytes) -> str:
    """The bundle's version: the sha256 hex digest of the archive bytes."""
    return hashlib.sha256(data).hexdigest()


def _files(directory: Path) -> Iterator[tuple[str, Path]]:
    """Every file to pack as (archive name, path), sorted; raises BundleError on a symlink."""
    for root, dirs, names in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS)
        base = Path(root)
        for sub in dirs:
            if (base / sub).is_symlink():
                raise BundleError(f"{base / sub}: symbolic links cannot be packed into a bundle")
        for name in sorted(names):
            path = base / name
            if name.endswith(_SKIP_SUFFIXES):
                continue
            if path.is_symlink():
                raise BundleError(f"{path}: symbolic links cannot be packed into a bundle")
            if not path.is_file():
                raise BundleError(f"{path}: only regular files can be packed into a bundle")
            yield path.relative_to(directory).as_posix(), path


def pack(directory: Path) -> bytes:
    """Pack `directory` into a deterministic tar.gz: identical content gives identical bytes."""
    entries = sorted(_files(directory))
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, path in entries:
            data = path.read_bytes()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 0
            info.mode = 0o755 if path.stat().st_mode & 0o111 else 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(data))
    out = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0, compresslevel=9) as gz:
        gz.write(raw.getvalue())
    return out.getvalue()


def build(directory: Path, *, platform: str | None = None, python: str = sys.executable) -> bytes:
    """Pack `directory`, first installing `requirements.txt` into `.deps/` when there is one."""
    requirements = directory / "requirements.txt"
    if not requirements.is_file():
        return pack(directory)
    with tempfile.TemporaryDirectory(prefix="edge-bundle-") as tmp:
        staging = Path(tmp) / directory.name
        shutil.copytree(
            directory,
            staging,
            symlinks=True,
            ignore=shutil.ignore_patterns(*_SKIP_DIRS, "*.pyc", DEPS_DIR),
        )
        install_requirements(requirements, staging / DEPS_DIR, platform=platform, python=python)
        return pack(staging)


def install_requirements(
    requirements: Path, target: Path, *, platform: str | None = None, python: str = sys.executable
) -> None:
    """pip-install `requirements` into the directory `target`; raises BundleError with pip's output."""
    command = [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    command += ["--no-compile", "--target", str(target), "-r", str(requirements)]
    if platform is not None:
        command += ["--platform", platform, "--only-binary=:all:", "--python-version", "3.13"]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        output = (result.stderr or result.stdout).strip()
        raise BundleError(f"{requirements}: pip install failed (exit {result.returncode}):\n{output}")


class _Bounded(io.RawIOBase):
    """The gzip stream, raising BundleError once more than `limit` bytes have been unpacked."""

    def __init__(self, stream: gzip.GzipFile, limit: int) -> None:
        self._stream = stream
        self._limit = limit
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        data = self._stream.read(len(buffer))
        self.count += len(data)
        if self.count > self._limit:
            raise BundleError(f"bundle unpacks to more than {self._limit} bytes; that is the limit")
        buffer[: len(data)] = data
        return len(data)


def _member_name(member: tarfile.TarInfo) -> str:
    """The member's normalised relative path; raises BundleError on anything unsafe."""
    name = member.name
    if name.startswith("/") or PurePosixPath(name).is_absolute():
        raise BundleError(f"{name}: absolute paths are not allowed in a bundle")
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise BundleError(f"{name}: '..' path components are not allowed in a bundle")
    if "\\" in name or "\0" in name:
        raise BundleError(f"{name}: backslashes and NUL bytes are not allowed in bundle paths")
    if member.issym():
        raise BundleError(f"{name}: symbolic links are not allowed in a bundle")
    if member.islnk():
        raise BundleError(f"{name}: hard links are not allowed in a bundle")
    if member.ischr() or member.isblk() or member.isfifo():
        raise BundleError(f"{name}: device and fifo files are not allowed in a bundle")
    if not (member.isfile() or member.isdir()):
        raise BundleError(f"{name}: only regular files and directories are allowed in a bundle")
    if not parts:
        if member.isdir():
            return ""
        raise BundleError(f"{name!r}: a bundle member needs a file name")
    return "/".join(parts)


def _compile_error(name: str, source: bytes) -> str | None:
    """`file:line: SyntaxError: msg` when `source` does not compile, else None."""
    try:
        compile(source, name, "exec", dont_inherit=True)
    except SyntaxError as exc:
        where = name if exc.lineno is None else f"{name}:{exc.lineno}"
        return f"{where}: {type(exc).__name__}: {exc.msg}"
    except ValueError as exc:
        return f"{name}: {type(exc).__name__}: {exc}"
    return None


def _check_collision(name: str, is_dir: bool, files: set[str], directories: dict[str, str]) -> None:
    """Refuse a member that makes a file a directory, or a directory a file (no node could unpack
    both `a` and `a/b`); records the directories `name` needs."""
    parts = name.split("/") if name else []
    needed = ["/".join(parts[:i]) for i in range(1, len(parts) + (1 if is_dir else 0))]
    for directory in needed:
        if directory in files:
            raise BundleError(
                f"{name}: collides with the file {directory}: a bundle cannot hold both a file"
                f" {directory} and a member under {directory}/; rename one of them"
            )
        directories.setdefault(directory, name)
    if not is_dir and name in directories:
        raise BundleError(
            f"{name}: collides with {directories[name]}: a bundle cannot hold both a file {name}"
            f" and a member under {name}/; rename one of them"
        )


def _members(data: bytes, limits: Limits) -> Iterator[tuple[str, tarfile.TarInfo, bytes | None]]:
    """Each checked member as (name, info, content for files); raises BundleError."""
    if len(data) > limits.max_bytes:
        raise BundleError(f"bundle is {len(data)} bytes compressed; the limit is {limits.max_bytes}")
    gz = gzip.GzipFile(fileobj=io.BytesIO(data), mode="rb")
    stream = io.BufferedReader(_Bounded(gz, limits.max_unpacked_bytes), _CHUNK)
    seen: set[str] = set()
    # Every directory a member is or lies in -> the first member that made it one.
    directories: dict[str, str] = {}
    try:
        with tarfile.open(fileobj=stream, mode="r|") as tar:
            for count, member in enumerate(tar, start=1):
                if count > limits.max_members:
                    raise BundleError(f"bundle has more than {limits.max_members} members; that is the limit")
                name = _member_name(member)
                _check_collision(name, member.isdir(), seen, directories)
                if member.isdir():
                    yield name, member, None
                    continue
                if name in seen:
                    raise BundleError(f"{name}: appears more than once in the bundle")
                seen.add(name)
                handle = tar.extractfile(member)
                content = handle.read() if handle is not None else b""
                yield name, member, content
    except (tarfile.TarError, EOFError, gzip.BadGzipFile, OSError) as exc:
        raise BundleError(f"bundle is not a valid tar.gz archive: {exc}") from None


def _archive_files(data: bytes, limits: Limits) -> Iterator[tuple[str, bytes | memoryview | None]]:
    """Each member as (name, content; None for a directory), unpacked in one go (for checks, not
    extraction: several times faster than the streaming reader); raises BundleError."""
    if len(data) > limits.max_bytes:
        raise BundleError(f"bundle is {len(data)} bytes compressed; the limit is {limits.max_bytes}")
    inflate = zlib.decompressobj(wbits=31)  # gzip framing
    try:
        raw = inflate.decompress(data, limits.max_unpacked_bytes + 1)
    except zlib.error as exc:
        raise BundleError(f"bundle is not a valid tar.gz archive: {exc}") from None
    if len(raw) > limits.max_unpacked_bytes:
        raise BundleError(f"bundle unpacks to more than {limits.max_unpacked_bytes} bytes; that is the limit")
    if not inflate.eof or inflate.unused_data:  # cut short, or several gzip members: `pack` writes one
        for name, _member, content in _members(data, limits):
            yield name, content
        return
    view = memoryview(raw)
    try:
        with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tar:
            for count, member in enumerate(tar, start=1):
                if count > limits.max_members:
                    raise BundleError(f"bundle has more than {limits.max_members} members; that is the limit")
                name = _member_name(member)
                end = member.offset_data + member.size
                yield name, None if member.isdir() else view[member.offset_data : end]
    except (tarfile.TarError, EOFError) as exc:
        raise BundleError(f"bundle is not a valid tar.gz archive: {exc}") from None


def _check_bounds(manifest: Manifest, bounds: ManifestBounds) -> None:
    env_bytes = sum(len(key.encode()) + len(value.encode()) for key, value in manifest.env.items())
    if env_bytes > bounds.max_env_bytes:
        raise BundleError(
            f"{MANIFEST_NAME}: Expected [env] names and values of at most {bounds.max_env_bytes} bytes"
            f" together, got {env_bytes} bytes - at `$.env`; keep large values in files of the bundle"
            " (or raise the origin's --max-env-bytes)"
        )
    if len(manifest.routes) > bounds.max_routes:
        raise BundleError(
            f"{MANIFEST_NAME}: Expected at most {bounds.max_routes} routes, got {len(manifest.routes)}"
            " - at `$.routes`; route a shared prefix instead of each path (or raise the origin's"
            " --max-routes)"
        )


def read_member(data: bytes, name: str, limits: Limits = DEFAULT_LIMITS) -> bytes | None:
    """The content of the file `name` in a bundle archive (None when it has none); raises BundleError."""
    for member, content in _archive_files(data, limits):
        if member == name and content is not None:
            return bytes(content)
    return None


def _check_manifest(
    files: dict[str, bytes], default_name: str, bounds: ManifestBounds | None = None
) -> Manifest:
    if MANIFEST_NAME not in files:
        raise BundleError(f"{MANIFEST_NAME}: missing; a bundle needs a manifest at its top level")
    size = len(files[MANIFEST_NAME])
    if bounds is not None and size > bounds.max_manifest_bytes:  # before decoding it
        raise BundleError(
            f"{MANIFEST_NAME}: Expected at most {bounds.max_manifest_bytes} bytes, got {size} bytes;"
            " keep large data in files of the bundle (or raise the origin's --max-manifest-bytes)"
        )
    try:
        manifest = decode_manifest(files[MANIFEST_NAME], MANIFEST_NAME, default_name)
    except ManifestError as exc:
        raise BundleError(str(exc)) from None
    if bounds is not None:
        _check_bounds(manifest, bounds)
    module = manifest.module.replace(".", "/")
    path = f"{module}.py" if f"{module}.py" in files else f"{module}/__init__.py"
    if path not in files:
        raise BundleError(
            f"{MANIFEST_NAME}: entrypoint module `{manifest.module}` is not in the bundle"
            f" (expected {module}.py or {module}/__init__.py) - at `$.entrypoint`"
        )
    problem = entrypoint_problem(manifest, path, files[path])
    if problem is not None:
        raise BundleError(problem)
    return manifest


def validate(
    data: bytes, default_name: str, limits: Limits = DEFAULT_LIMITS, bounds: ManifestBounds | None = None
) -> Manifest:
    """Check a bundle and return its manifest; raises BundleError naming the bad member.

    Parameters
    ----------
    data: the tar.gz bytes.
    default_name: the function name when `edge.toml` has none (as `decode_manifest` takes it).
    limits: the size and member-count limits.
    bounds: what the manifest may carry (the origin's upload checks them; None: not checked).

    Python files outside `.deps/` must compile; manifest errors are reported against `edge.toml`,
    and so is an entrypoint that surely does not fit its kind (read, never run: entrypoint_check).
    """
    files: dict[str, bytes] = {}
    for name, _member, content in _members(data, limits):
        if content is None:
            continue
        # The manifest and the sources, for the entrypoint check; other files only by name.
        keep = name == MANIFEST_NAME or (name.endswith(".py") and not name.startswith(f"{DEPS_DIR}/"))
        files[name] = content if keep else b""
        if name.endswith(".py") and not name.startswith(f"{DEPS_DIR}/"):
            problem = _compile_error(name, content)
            if problem is not None:
                raise BundleError(problem)
    return _check_manifest(files, default_name, bounds)


def _unpack(data: bytes, dest: Path, limits: Limits) -> Path:
    """Unpack into a new read-only temp sibling of `dest`; returns it (the caller renames it)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    try:
        directories = [tmp]
        for name, member, content in _members(data, limits):
            target = tmp / name
            if content is None:
                target.mkdir(mode=0o755, parents=True, exist_ok=True)
                directories.append(target)
                continue
            target.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
            with open(target, "xb") as out:
                out.write(content)
            target.chmod(_EXEC_MODE if member.mode & 0o111 else _FILE_MODE)
        # Parents made on the way (a member `a/b.py` without an `a/` entry) are sealed too.
        for directory in sorted({*directories, *(p for p in tmp.rglob("*") if p.is_dir())}, reverse=True):
            directory.chmod(_DIR_MODE)
    except OSError as exc:
        remove_tree(tmp)
        raise BundleError(f"{dest}: cannot extract the bundle: {exc}") from None
    except BaseException:
        remove_tree(tmp)
        raise
    return tmp


def extract(data: bytes, dest: Path, default_name: str, limits: Limits = DEFAULT_LIMITS) -> Manifest:
    """Validate, then unpack read-only into the new directory `dest` atomically (temp sibling, rename)."""
    manifest = validate(data, default_name, limits)
    if dest.exists():
        raise BundleError(f"{dest}: already exists; extract needs a new directory")
    tmp = _unpack(data, dest, limits)
    try:
        tmp.rename(dest)
    except OSError as exc:
        remove_tree(tmp)
        raise BundleError(f"{dest}: cannot extract the bundle: {exc}") from None
    return manifest


def replace_tree(data: bytes, dest: Path, default_name: str, limits: Limits = DEFAULT_LIMITS) -> None:
    """Put a fresh copy of the bundle at `dest` in place of what is there (unpacked first, then swapped)."""
    validate(data, default_name, limits)
    tmp = _unpack(data, dest, limits)
    old = dest.with_name(f".{dest.name}.{os.getpid()}.replaced")
    try:
        dest.rename(old)
        tmp.rename(dest)
    except OSError as exc:
        remove_tree(tmp)
        raise BundleError(f"{dest}: cannot replace the bundle: {exc}") from None
    remove_tree(old)


def remove_tree(path: Path) -> None:
    """Delete a directory tree, read-only bundle directories included; missing is fine."""

    def writable_then_retry(function: Any, name: str, exc: BaseException) -> None:
        with contextlib.suppress(OSError):
            os.chmod(os.path.dirname(name), 0o755)
            function(name)

    with contextlib.suppress(FileNotFoundError):
        shutil.rmtree(path, onexc=writable_then_retry)


def clear_bytecode(directory: Path) -> int:
    """Remove every `__pycache__` directory under `directory`; returns how many there were.

    Bytecode caches are not part of a bundle and cannot be checked against it: a planted `.pyc`
    with the source's size and mtime in its header would run instead of the verified source.
    """
    caches = [Path(root) / _PYCACHE for root, dirs, _ in os.walk(directory) if _PYCACHE in dirs]
    for cache in caches:
        parent = cache.parent
        mode = parent.stat().st_mode & 0o7777
        parent.chmod(mode | 0o200)
        try:
            if cache.is_symlink():  # os.walk lists a link to a directory among the directories
                cache.unlink()
            else:
                remove_tree(cache)
        finally:
            parent.chmod(mode)
    return len(caches)


def compile_bytecode(directory: Path) -> str | None:
    """Write the bytecode cache of the function's own modules (`.deps/` aside), as the node.

    Checked-hash `.pyc` files (PEP 552): the import system compares the source's hash with the
    one in the cache at every import, so an edit (or a file changed on disk) is never run stale;
    call it after `clear_bytecode` and the checks, so what is cached is what was checked. An
    isolate that imports a module from source compiles it itself: ≈ 2 ms and ≈ 0.28 MiB more
    per interpreter for a hello module (the compiler's per-interpreter state), at every cold start.
    Directories keep their modes (a sealed bundle stays sealed; caches are made read-only too).
    Returns None, or what could not be written (a source with a syntax error is left to its
    import, which reports it as before).
    """
    import importlib.util
    import py_compile

    mode = py_compile.PycInvalidationMode.CHECKED_HASH
    for root, dirs, files in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS and d != DEPS_DIR)
        sources = sorted(name for name in files if name.endswith(".py"))
        if not sources:
            continue
        parent = Path(root)
        parent_mode = stat.S_IMODE(parent.lstat().st_mode)
        # parent/__pycache__, or under sys.pycache_prefix (PYTHONPYCACHEPREFIX), where imports look too.
        cache = Path(importlib.util.cache_from_source(str(parent / sources[0]))).parent
        try:
            parent.chmod(parent_mode | 0o200)
            try:
                for name in sources:
                    with contextlib.suppress(py_compile.PyCompileError):
                        py_compile.compile(str(parent / name), doraise=True, invalidation_mode=mode)
            finally:
                parent.chmod(parent_mode)
            sealed = parent_mode & 0o200 == 0 and cache == parent / _PYCACHE
            if sealed and cache.is_dir() and not cache.is_symlink():
                for compiled in cache.iterdir():
                    compiled.chmod(_FILE_MODE)
                cache.chmod(_DIR_MODE)
        except OSError as exc:
            return (
                f"{parent}: cannot write the bytecode cache of its modules ({exc}); each cold start"
                " compiles them instead (≈ 2 ms and ≈ 0.3 MiB more per instance)"
            )
    return None


def seal(directory: Path) -> None:
    """Make an unpacked bundle read-only again: files 0444 (0555 when executable), directories 0555."""
    for root, dirs, files in os.walk(directory, topdown=False):
        for name in files:
            path = os.path.join(root, name)
            info = os.lstat(path)
            if stat.S_ISREG(info.st_mode):
                wanted = _EXEC_MODE if info.st_mode & 0o111 else _FILE_MODE
                if stat.S_IMODE(info.st_mode) != wanted:
                    os.chmod(path, wanted)
        for name in dirs:
            path = os.path.join(root, name)
            if not os.path.islink(path) and stat.S_IMODE(os.lstat(path).st_mode) != _DIR_MODE:
                os.chmod(path, _DIR_MODE)
    os.chmod(directory, _DIR_MODE)


def _read(path: Path) -> bytes:
    with open(path, "rb", buffering=0) as file:
        return file.read()


def verify_tree(data: bytes, directory: Path, limits: Limits = DEFAULT_LIMITS) -> list[str]:
    """How `directory` differs from the bundle `data` unpacked; [] when it holds the same files.

    Every file's bytes are compared with the archive's; a file or directory that the bundle does not
    have is a difference, except `__pycache__` directories (remove them first with `clear_bytecode`).
    Modes are not compared (`seal` sets them). Raises BundleError for a bad bundle.
    """
    problems: list[str] = []
    expected = {""}
    for name, content in _archive_files(data, limits):
        parts = name.split("/")
        expected.update("/".join(parts[:i]) for i in range(1, len(parts)))
        expected.add(name)
        path = directory / name
        try:
            info = path.lstat()
        except FileNotFoundError:
            problems.append(f"{name}: missing")
            continue
        if content is None:
            if not stat.S_ISDIR(info.st_mode):
                problems.append(f"{name}: not a directory")
            continue
        if not stat.S_ISREG(info.st_mode):
            problems.append(f"{name}: not a regular file")
        elif info.st_size != len(content) or _read(path) != content:
            problems.append(f"{name}: content differs")
    for root, dirs, files in os.walk(directory):
        base = Path(root).relative_to(directory).as_posix()
        prefix = "" if base == "." else f"{base}/"
        dirs[:] = sorted(d for d in dirs if d != _PYCACHE)
        for name in sorted([*dirs, *files]):
            if f"{prefix}{name}" not in expected:
                problems.append(f"{prefix}{name}: not in the bundle")
            elif name in dirs and os.path.islink(os.path.join(root, name)):
                problems.append(f"{prefix}{name}: a symbolic link, not a directory")
    return problems
