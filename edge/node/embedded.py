"""The node in one process: granian's embedded server on this process's event loop.

With `workers = 1` (and `supervise = false`, the default) nothing needs granian's main process,
which costs ≈ 45 MB RSS: a second interpreter with granian and the node's imports, whose pages
the forked worker shares but RSS counts twice. What that process did, and who does it here:

- a worker that dies (a crash in native code, the OOM killer) ends the node instead; the
  service manager restarts it (deploy/edge-node.service: `Restart=on-failure`), which loads
  every function again, as a respawned worker did.
- a recycle (isolates stuck in C code, see edge/node/recycling.py; RSS past `max_rss_mb`;
  SIGHUP): the node stops listening, lets the requests in flight finish, and `edge node`
  executes itself again in the same pid (edge/cli/node.py), so the stuck threads go with the
  old process image. Connections are refused until it listens again; with `supervise = true`
  a new worker starts first instead.
- the settings hand-off: the app is made here, with the settings in hand.
- the admin listener: a thread of this process, as it was of the main process.

The embedded server drives granian's Rust worker with `serve_async` where a supervised worker
uses `serve_str`: ≈ 10-15% fewer requests per second in an A/B (docs/perf/2026-12-02-memory.md).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from pathlib import Path

from edge.node.settings import NodeSettings

__all__ = ["OneProcess", "rss_mib"]

log = logging.getLogger("edge.node")

# Seconds between two looks at this process's RSS when `max_rss_mb` is set.
RSS_SAMPLE_INTERVAL_S = 1.0
_PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_mib(statm: Path = Path("/proc/self/statm")) -> float:
    """This process's resident set size in MiB."""
    return int(statm.read_text().split()[1]) * _PAGE / (1 << 20)


class OneProcess:
    """Serves the node's app until SIGTERM/SIGINT or a recycle; see the module docstring."""

    def __init__(self, settings: NodeSettings) -> None:
        self.settings = settings
        # Why the node must start again in place ("" when it was told to stop).
        self.recycle_reason = ""
        self._server: object | None = None

    def serve(self) -> str:
        """Serve (blocking) on uvloop; returns the recycle reason, or "" after SIGTERM/SIGINT."""
        import uvloop

        return uvloop.run(self._serve())

    def recycle(self, reason: str = "the node's worker watch asked for it") -> None:
        """Stop listening, finish what is in flight, then start again (the caller re-executes)."""
        if self.recycle_reason:
            return
        self.recycle_reason = reason
        log.error("restarting this node in place once the requests in flight are answered: %s", reason)
        self._stop()

    def _stop(self) -> None:
        if self._server is not None:
            self._server.stop()  # type: ignore[attr-defined]

    async def _serve(self) -> str:
        from granian.constants import HTTPModes, Interfaces
        from granian.server.embed import Server

        from edge.node import app, rsgi

        settings = self.settings
        front_end = rsgi.create_app if settings.interface == "rsgi" else app.create_app
        node = front_end(settings=settings, recycle=self.recycle)
        # Started and stopped here, around the server, for both front ends (granian's embedded
        # server runs the RSGI init hook on this running loop, where it cannot wait for it).
        try:
            await node.startup()
        except Exception:
            log.exception("node start-up failed")
            raise
        server = Server(
            lambda: node,
            factory=True,
            address=settings.host,
            port=settings.port,
            # ASGINL: ASGI without the lifespan protocol (the start-up above is the lifespan's).
            interface=Interfaces.RSGI if settings.interface == "rsgi" else Interfaces.ASGINL,
            http=HTTPModes(settings.http),
            log_level=settings.log_level,  # type: ignore[arg-type]
            log_access=False,
            ssl_cert=Path(settings.tls_cert) if settings.tls_cert else None,
            ssl_key=Path(settings.tls_key) if settings.tls_key else None,
        )
        self._server = server
        loop = asyncio.get_running_loop()
        for stop in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(stop, self._stop)
        loop.add_signal_handler(signal.SIGHUP, self.recycle, "SIGHUP")
        watch = loop.create_task(self._watch_rss()) if settings.max_rss_mb else None
        try:
            await server.serve()
        finally:
            if watch is not None:
                watch.cancel()
            await node.shutdown()
        return self.recycle_reason

    async def _watch_rss(self) -> None:
        limit = self.settings.max_rss_mb
        while True:
            await asyncio.sleep(RSS_SAMPLE_INTERVAL_S)
            rss = rss_mib()
            if rss > limit:
                self.recycle(f"RSS {rss:.0f} MiB over max_rss_mb = {limit}")
                return
