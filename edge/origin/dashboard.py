"""The web dashboard the origin serves (`ROUTES`)."""

from __future__ import annotations

from edge.origin.routes import Route

__all__ = ["ROUTES"]

ROUTES: list[Route] = []
