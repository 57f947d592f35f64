"""The fleet's logs at the origin: lines nodes ship, read by `edge logs` (`ROUTES`)."""

from __future__ import annotations

from edge.origin.routes import Route

__all__ = ["ROUTES"]

ROUTES: list[Route] = []
