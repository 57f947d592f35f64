"""The origin in-process: an unexpected error answers 500 naming only its type and logs the traceback."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import pytest

from edge.origin.app import OriginApp, build_origin
from edge.origin.routes import Route
from edge.origin.service import Origin
from edge.origin.settings import OriginSettings


async def broken(origin: Origin, request: Any) -> Any:
    raise RuntimeError("secret detail")


def test_an_unexpected_error_is_a_500_and_its_traceback_is_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    origin = build_origin(OriginSettings(data_dir=str(tmp_path)))
    app = OriginApp(origin, [Route("GET", "/v1/health", frozenset(), broken, public=True)])
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/v1/health", "query_string": b"", "headers": []}
    try:
        with caplog.at_level(logging.ERROR, logger="edge.origin"):
            asyncio.run(app(scope, receive, send))
    finally:
        origin.store.close()
    assert sent[0]["status"] == 500
    assert json.loads(sent[1]["body"]) == {"error": "internal error: RuntimeError"}
    [record] = caplog.records
    assert record.getMessage() == "GET /v1/health failed"
    assert record.exc_info is not None
    assert str(record.exc_info[1]) == "secret detail"
