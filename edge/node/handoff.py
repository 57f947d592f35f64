"""Settings from `edge node`'s main process to its granian workers, never through the environment.

The settings hold the node token, so they must not sit in a worker's environment (spawned workers
get the parent's environment as their `/proc/self/environ`) or command line. The main process
listens on an abstract Unix socket with a random name, put in `EDGE_NODE_SETTINGS_SOCKET`, and
answers each of its own child processes once, identified by pid and start time (SO_PEERCRED).
A worker asks in `create_app`, before any isolate exists; a second ask from the same process (a
function running in it) or an ask from any other process (a function's subprocess) gets nothing.
Works for both start methods granian uses (fork: the listening socket is closed in the child at
once; spawn: it is not inherited), and for respawned workers.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import struct
import threading

import msgspec

from edge.node.settings import NodeSettings

__all__ = ["SOCKET_VARIABLE", "HandoffError", "Offer", "offer", "receive"]

SOCKET_VARIABLE = "EDGE_NODE_SETTINGS_SOCKET"
_PEERCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


class HandoffError(RuntimeError):
    """The worker could not get its settings from the node's main process."""


def _process_start(pid: int) -> tuple[int, int]:
    """(parent pid, start time in clock ticks) of `pid`, from /proc/<pid>/stat; raises OSError."""
    with open(f"/proc/{pid}/stat", "rb") as stat:
        text = stat.read()
    fields = text[text.rindex(b")") + 2 :].split()  # the name in parentheses may hold spaces
    return int(fields[1]), int(fields[19])


class Offer:
    """The main process's side: a listening socket served by a daemon thread until `close`."""

    def __init__(self, settings: NodeSettings) -> None:
        self.name = f"edge-node-settings-{os.getpid()}-{secrets.token_hex(8)}"
        self._payload = msgspec.json.encode(settings)
        self._served: set[tuple[int, int]] = set()
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind("\0" + self.name)
        self._listener.listen(16)
        # A forked worker must not keep the listener: a function could accept a sibling's request.
        os.register_at_fork(after_in_child=self._listener.close)
        self._thread = threading.Thread(target=self._serve, name="edge-settings-handoff", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self._listener.accept()
            except OSError:  # closed
                return
            with connection:
                if self._allowed(connection):
                    with contextlib.suppress(OSError):
                        connection.sendall(self._payload)

    def _allowed(self, connection: socket.socket) -> bool:
        """Once per child process of this one, under this uid (or root's)."""
        raw = connection.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
        pid, uid, _gid = _PEERCRED.unpack(raw)
        if uid not in (os.getuid(), 0):
            return False
        try:
            parent, started = _process_start(pid)
        except (OSError, ValueError, IndexError):
            return False
        if parent != os.getpid() or (pid, started) in self._served:
            return False
        self._served.add((pid, started))
        return True

    def close(self) -> None:
        """Stop answering."""
        os.environ.pop(SOCKET_VARIABLE, None)
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()


def offer(settings: NodeSettings) -> Offer:
    """Start answering this process's workers with `settings`; call before granian starts them."""
    handle = Offer(settings)
    os.environ[SOCKET_VARIABLE] = handle.name
    return handle


def receive(timeout: float = 10.0) -> NodeSettings | None:
    """In a worker: the settings its main process offers (None when it offers none); removes the variable.

    Raises HandoffError when the main process does not answer or refuses (this process asked before).
    """
    name = os.environ.pop(SOCKET_VARIABLE, None)
    if name is None:
        return None
    chunks = []
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
            connection.settimeout(timeout)
            connection.connect("\0" + name)
            while chunk := connection.recv(65536):
                chunks.append(chunk)
    except OSError as exc:
        raise HandoffError(f"{SOCKET_VARIABLE}={name}: cannot get the node's settings: {exc}") from None
    if not chunks:
        raise HandoffError(
            f"{SOCKET_VARIABLE}={name}: the node's main process refused this process"
            " (only its own workers get the settings, once each)"
        )
    try:
        return msgspec.json.decode(b"".join(chunks), type=NodeSettings)
    except msgspec.DecodeError as exc:
        raise HandoffError(f"{SOCKET_VARIABLE}={name}: unusable settings: {exc}") from None
