"""`edge node`: run an edge node under granian."""

from __future__ import annotations

import argparse
import errno
import fnmatch
import importlib.metadata
import os
import shutil
import socket
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import msgspec

from edge.cli._abort import abort
from edge.cli._self import edge_argv
from edge.node.functions import scan_functions
from edge.node.settings import NodeSettings, SettingsError, load_settings, read_token_file

if TYPE_CHECKING:
    from edge.node.admin import AdminServer

__all__ = ["register"]


def register(subparsers: Any) -> None:
    """Add `edge node`."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "node", help="run an edge node", description="Serve functions from persistent subinterpreters."
    )
    parser.add_argument("--functions", metavar="DIR", help="serve every function directory in DIR")
    parser.add_argument(
        "--origin",
        metavar="URL",
        help="sync functions from this origin instead (URL1,URL2,...: origins on one database, failed over)",
    )
    parser.add_argument(
        "--token-file", metavar="FILE", help="origin mode: a file holding the node token (or EDGE_TOKEN)"
    )
    parser.add_argument("--token", help=argparse.SUPPRESS)  # deprecated: shows the token in `ps`
    parser.add_argument("--settings-fd", type=int, help=argparse.SUPPRESS)  # set by the re-exec only
    parser.add_argument("--runtime-dir", help=argparse.SUPPRESS)  # set by a restart in place only
    parser.add_argument("--data", metavar="DIR", help="origin mode: state directory (default .edge/node)")
    parser.add_argument("--origin-key", metavar="KEY", help="origin mode: the origin's public key to pin")
    parser.add_argument(
        "--origin-ca", metavar="FILE", help="origin mode: an https origin's certificate or CA to trust (PEM)"
    )
    parser.add_argument("--tls-cert", metavar="FILE", help="serve functions over HTTPS with this certificate")
    parser.add_argument("--tls-key", metavar="FILE", help="the private key of --tls-cert")
    parser.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port to listen on (default 8080)")
    parser.add_argument("--workers", type=int, help="granian worker processes (default 1)")
    parser.add_argument(
        "--admin-port",
        type=int,
        metavar="PORT",
        help="Prometheus metrics at http://ADMIN_HOST:PORT/metrics (default 9180 on 127.0.0.1; 0: off)",
    )
    parser.add_argument(
        "--config", metavar="FILE", type=Path, help="settings file (TOML), e.g. config/node.toml"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Load settings, print what to curl, then serve until SIGINT/SIGTERM."""
    if args.settings_fd is not None:
        settings = _settings_from_fd(args.settings_fd)
    else:
        settings = _load(args)
        exposed = _exposed(settings)
        if exposed:
            # Functions can read this process's argv and initial environment (and so can `ps`):
            # start over in a clean process image, with the settings handed over in memory.
            print(f"edge node: re-executing without {', '.join(exposed)}", file=sys.stderr, flush=True)
        if exposed or not sys.flags.no_site:
            _reexec(settings)
    check_port_free(settings.host, settings.port)
    _compile_guest()
    if settings.origin:
        base = _base(settings)
        print(f"edge node: syncing from {settings.origin} on {base} (state in {settings.data})", flush=True)
        print(f"  curl {base}/_edge/ready", flush=True)
    else:
        if not settings.functions:
            abort("no functions to serve: pass --functions DIR or --origin URL", 2)
        root = Path(settings.functions)
        if not root.is_dir():
            abort(f"--functions {settings.functions}: not a directory", 2)
        _print_banner(settings, root)
    serve(settings, args.runtime_dir)
    return 0


TOKEN_WARNING = (
    "edge node: warning: --token puts the node token on the command line, where `ps` and"
    " /proc/PID/cmdline show it; use --token-file FILE (or EDGE_TOKEN). The node now re-executes"
    " itself without it."
)


def _load(args: argparse.Namespace) -> NodeSettings:
    """Settings from the file, EDGE_* variables and flags, with the token read from its file."""
    config = args.config or (Path(os.environ["EDGE_CONFIG"]) if os.environ.get("EDGE_CONFIG") else None)
    flags = {
        "functions": args.functions,
        "host": args.host,
        "port": args.port,
        "workers": args.workers,
        "admin_port": args.admin_port,
        "origin": args.origin,
        "token": args.token,
        "token_file": args.token_file,
        "data": args.data,
        "origin_key": args.origin_key,
        "origin_ca": args.origin_ca,
        "tls_cert": args.tls_cert,
        "tls_key": args.tls_key,
    }
    if args.token is not None:
        print(TOKEN_WARNING, file=sys.stderr, flush=True)
    try:
        settings = read_token_file(load_settings(config, os.environ, flags))
    except SettingsError as exc:
        abort(str(exc), 2)
    if settings.origin and not settings.token:
        abort("--origin needs a node token: pass --token-file FILE (or set EDGE_TOKEN)", 2)
    settings = _check_tls(settings)
    # No function may open these, whatever its `[permissions] read` says (the interpreter's audit
    # hook, a process child's Landlock rules and mount view).
    secrets = [os.path.realpath(path) for path in (settings.token_file, settings.tls_key) if path]
    if secrets:
        settings = msgspec.structs.replace(settings, protected_paths=[*settings.protected_paths, *secrets])
    return settings


def _check_tls(settings: NodeSettings) -> NodeSettings:
    """Abort on TLS settings that cannot work; returns them with absolute paths (workers read them)."""
    from edge.cli._tls import server_pair
    from edge.control.failover import origin_client

    cert = Path(settings.tls_cert) if settings.tls_cert else None
    key = Path(settings.tls_key) if settings.tls_key else None
    pair = server_pair(cert, key)
    origin_ca = os.path.abspath(settings.origin_ca) if settings.origin_ca else ""
    if settings.origin:
        try:
            origin_client(settings.origin, None, ca_file=origin_ca or None)
        except ValueError as exc:
            abort(f"{exc} - at `$.origin`", 2)
    elif origin_ca:
        abort(f"--origin-ca {settings.origin_ca}: only an origin-mode node (--origin URL) uses it", 2)
    return msgspec.structs.replace(
        settings,
        origin_ca=origin_ca,
        tls_cert=str(pair[0]) if pair else "",
        tls_key=str(pair[1]) if pair else "",
    )


def _exposed(settings: NodeSettings) -> list[str]:
    """What the kernel's copies of this process's argv and environment show that they should not."""
    try:
        cmdline = Path("/proc/self/cmdline").read_bytes()
        environ = Path("/proc/self/environ").read_bytes()
    except OSError:  # no /proc: judge by what Python sees
        cmdline = b"\0".join(os.fsencode(arg) for arg in sys.orig_argv)
        environ = b"\0".join(os.fsencode(f"{key}={value}") for key, value in os.environ.items())
    found = []
    token = settings.token.encode()
    if token and token in cmdline:
        found.append("the node token in the command line")
    if token and token in environ:
        found.append("the node token in the environment")
    names = {entry.partition(b"=")[0].decode(errors="replace") for entry in environ.split(b"\0") if entry}
    found += [f"${name}" for name in sorted(names) if _scrubbed(name, settings.scrub_env)]
    return found


def _scrubbed(variable: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(variable, pattern) for pattern in patterns)


# How `edge node` runs once it executed itself again: without `site` (-S), which the interpreters
# it creates for functions then skip too (≈ 0.13 MiB each, and no site-packages .pth code runs
# in them); the node's own interpreter adds site-packages itself.
_LAUNCH = "import site, sys; site.main(); from edge.cli.node import relaunched; sys.exit(relaunched())"


def relaunched() -> int:
    """`edge node` once it executed itself again (`_LAUNCH`): with this command's parser only, so
    the node's process does not import the modules of every other command (cryptography...)."""
    parser = argparse.ArgumentParser(prog="edge")
    register(parser.add_subparsers())
    args = parser.parse_args()
    code: int = args.func(args)
    return code


def _reexec(settings: NodeSettings, runtime_dir: str | None = None) -> NoReturn:
    """Run `edge node` again in this pid with a clean environment, the settings in a memfd.

    `runtime_dir`: the node's runtime directory, kept by a restart in place (edge/node/embedded.py).
    """
    fd = os.memfd_create("edge-node-settings")
    os.write(fd, msgspec.json.encode(settings))
    os.lseek(fd, 0, os.SEEK_SET)
    os.set_inheritable(fd, True)
    token = settings.token
    environ = {
        key: value
        for key, value in os.environ.items()
        if not _scrubbed(key, settings.scrub_env) and not (token and token in value)
    }
    sys.stdout.flush()
    sys.stderr.flush()
    launcher = edge_argv()
    if launcher[1:] == ["-m", "edge"]:  # not the single-file artifact, whose bootstrap needs site
        launcher = [sys.executable, "-S", "-c", _LAUNCH]
    argv = [*launcher, "node", "--settings-fd", str(fd)]
    if runtime_dir:
        argv += ["--runtime-dir", runtime_dir]
    os.execve(sys.executable, argv, environ)


def _compile_guest() -> None:
    """Write the guest runtime's bytecode cache when it is missing (see isolates/guest/__init__.py)."""
    from isolates.guest import compile_guest

    problem = compile_guest()
    if problem:
        print(f"edge node: warning: {problem}", file=sys.stderr, flush=True)


def _settings_from_fd(fd: int) -> NodeSettings:
    """The settings `_reexec` handed over; the fd is closed at once (its contents hold the token)."""
    try:
        with os.fdopen(fd, "rb") as handover:
            raw = handover.read()
        return msgspec.json.decode(raw, type=NodeSettings)
    except (OSError, msgspec.DecodeError) as exc:
        abort(f"--settings-fd {fd}: cannot read the settings handed over by `edge node`: {exc}", 2)


def _base(settings: NodeSettings) -> str:
    scheme = "https" if settings.tls_cert else "http"
    return f"{scheme}://{settings.host}:{settings.port}"


def _print_banner(settings: NodeSettings, root: Path) -> None:
    base = _base(settings)
    found = scan_functions(root)
    print(f"edge node: {len(found)} function(s) from {root} on {base}", flush=True)
    for function in found:
        note = "" if function.manifest else f"   (will answer 503: {function.error})"
        print(f"  curl {base}/{function.name}{note}", flush=True)
    print(f"  curl {base}/_edge/ready", flush=True)


# Seconds between starting a replacement worker and stopping the one it replaces (its functions
# load meanwhile), and between two looks at the workers' RSS.
RESPAWN_INTERVAL_S = 2.0
RSS_SAMPLE_INTERVAL_S = 1


def _hand_over(settings: NodeSettings) -> None:
    """Offer the settings to granian's workers over a private socket (edge/node/handoff.py), not the
    environment: a spawned worker's /proc/PID/environ would show them, node token included."""
    from edge.node import handoff

    handoff.offer(settings)


def check_port_free(host: str, port: int) -> None:
    """Abort when another process listens on (host, port).

    Granian binds with SO_REUSEPORT, so a second node on a busy port would start and split the
    traffic with the first; a plain bind (SO_REUSEADDR only, as granian's own) tells first.
    """
    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                abort(
                    f"port {port} on {host} is already in use (another edge node?): stop that process,"
                    " or pick a free port with --port PORT (or `port` in the settings file, EDGE_PORT)",
                    2,
                )
            abort(f"cannot listen on {host}:{port}: {exc.strerror} - at `$.host`/`$.port`", 2)


def start_admin(settings: NodeSettings, runtime_dir: str) -> AdminServer | None:
    """The admin listener (Prometheus `GET /metrics`); None when it is off or its port is taken."""
    from edge.node.admin import AdminServer, NodeCollector, SampleReader, registry_for
    from edge.node.metrics import metrics_directory

    directory = metrics_directory(runtime_dir)
    directory.mkdir(exist_ok=True)
    if not settings.admin_port:
        return None
    collector = NodeCollector(SampleReader(directory), _edge_version(), lambda: _node_id(settings))
    server = AdminServer(settings.admin_host, settings.admin_port, registry_for(collector))
    try:
        server.start()
    except OSError as exc:
        # Not fatal: the node's traffic is not split, only this node's metrics are missing.
        print(
            f"edge node: error: no admin listener (Prometheus metrics) on"
            f" {settings.admin_host}:{settings.admin_port}: {exc.strerror}; set a free `admin_port`"
            " (EDGE_ADMIN_PORT, 0 turns it off)",
            file=sys.stderr,
            flush=True,
        )
        return None
    print(f"edge node: metrics at http://{settings.admin_host}:{server.port}/metrics", flush=True)
    return server


def _edge_version() -> str:
    try:
        return importlib.metadata.version("edge-functions")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _node_id(settings: NodeSettings) -> str:
    """The id an origin-mode node reports (its workers write it to `data` on first start)."""
    if not settings.origin:
        return ""
    if settings.node_id:
        return settings.node_id
    try:
        return Path(settings.data, "node-id").read_text().strip()
    except OSError:
        return ""


# `interface` setting -> (the granian factory of that front end, granian's interface name).
_FRONT_ENDS = {"rsgi": ("edge.node.rsgi:create_app", "rsgi"), "asgi": ("edge.node.app:create_app", "asgi")}


def serve(settings: NodeSettings, runtime_dir: str | None = None) -> None:
    """Serve until told to stop: in this process (edge/node/embedded.py) when `workers = 1` and
    `supervise` is off, else under granian's main process (this one), with forked workers.

    `runtime_dir`: kept from before a restart in place; else a new one is made."""
    from edge.node.recycling import RUNTIME_DIR_VARIABLE

    # Outlives every worker (marks of failing functions, metrics samples); functions may not open it.
    runtime_dir = runtime_dir or tempfile.mkdtemp(prefix="edge-node-")
    os.environ[RUNTIME_DIR_VARIABLE] = runtime_dir
    admin = start_admin(settings, runtime_dir)
    if settings.workers == 1 and not settings.supervise:
        from edge.node.embedded import OneProcess

        try:
            recycle = OneProcess(settings).serve()
        finally:
            if admin is not None:
                admin.close()
        if recycle:
            _reexec(settings, runtime_dir)
        shutil.rmtree(runtime_dir, ignore_errors=True)
        return
    try:
        _serve_supervised(settings)
    finally:
        if admin is not None:
            admin.close()
        shutil.rmtree(runtime_dir, ignore_errors=True)


def _serve_supervised(settings: NodeSettings) -> None:
    """Run granian's main process here until it is told to stop (workers are forked processes)."""
    from granian.constants import HTTPModes, Interfaces, Loops

    from edge.node.supervisor import NodeServer

    _hand_over(settings)
    front_end, interface = _FRONT_ENDS[settings.interface]
    server = NodeServer(
        front_end,
        factory=True,
        address=settings.host,
        port=settings.port,
        interface=Interfaces(interface),
        workers=settings.workers,
        loop=Loops.uvloop,
        http=HTTPModes(settings.http),
        log_level=settings.log_level,
        log_access=False,
        # A worker that misses its SIGTERM (sent while it was still starting) is killed, not awaited forever.
        workers_kill_timeout=settings.shutdown_timeout_ms // 1000 + 5,
        # A worker that dies (a crash in native code, the OOM killer) is replaced and the node
        # keeps answering. A worker asks for its own graceful recycle (new worker first, the old
        # one drains) with SIGHUP to this process, once it holds too many wedged isolates
        # (edge/node/app.py); past `max_rss_mb` granian recycles it the same way.
        respawn_failed_workers=True,
        respawn_interval=RESPAWN_INTERVAL_S,
        workers_max_rss=settings.max_rss_mb or None,
        rss_sample_interval=RSS_SAMPLE_INTERVAL_S,
        ssl_cert=Path(settings.tls_cert) if settings.tls_cert else None,
        ssl_key=Path(settings.tls_key) if settings.tls_key else None,
    )
    server.serve()
