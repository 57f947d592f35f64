"""A locust scenario over the examples: every task checks the status and a property of the body.

Start a node on the examples, then run locust headless against it, e.g.

    .venv/bin/edge node --functions examples --port 8080
    .venv/bin/locust -f loadtest/locustfile.py --headless -u 20 -r 10 -t 20s --host http://127.0.0.1:8080

Concurrent identical GETs may be collapsed into one invocation by the node's response cache, so
GET tasks check only what every such answer shares; per-request facts (the request id) are
checked on POSTs, which are never collapsed.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

from locust import HttpUser, between, task

_ids = itertools.count(1)


def _json(response: Any) -> Any:
    """The body as JSON, or None (the caller reports the failure)."""
    try:
        return response.json()
    except ValueError:
        return None


class ExampleUser(HttpUser):
    """A client of the four examples, weighted towards the cheap ones."""

    wait_time = between(0.01, 0.05)

    def on_start(self) -> None:
        with self.client.get("/_edge/ready", name="/_edge/ready", catch_response=True) as response:
            ready = _json(response)
            functions = ready.get("functions", {}) if isinstance(ready, dict) else {}
            serving = {name for name, state in functions.items() if state.get("state") == "serving"}
            missing = {"hello", "echo", "counter", "slow"} - serving
            if response.status_code != 200 or missing:
                response.failure(f"not ready: status {response.status_code}, not serving {sorted(missing)}")

    @task(10)
    def hello(self) -> None:
        with self.client.get("/hello", catch_response=True) as response:
            if response.status_code != 200:
                response.failure(f"status {response.status_code}: {response.text[:200]}")
            elif response.text != "hello world":
                response.failure(f"body {response.text[:200]!r}")

    @task(4)
    def echo(self) -> None:
        number = next(_ids)
        request_id = f"locust-{number}"
        payload = json.dumps({"n": number})
        with self.client.post(
            f"/api/echo/items?page={number % 10}",
            data=payload,
            headers={"x-request-id": request_id, "content-type": "application/json"},
            name="/api/echo/items?page=[n]",
            catch_response=True,
        ) as response:
            body = _json(response)
            expected = {
                "method": "POST",
                "path": "/api/echo/items",
                "query": {"page": [str(number % 10)]},
                "body": payload,
                "greeting": "hi",
                "function": "echo",
                "request_id": request_id,
            }
            if response.status_code != 200:
                response.failure(f"status {response.status_code}: {response.text[:200]}")
            elif not isinstance(body, dict) or {k: body.get(k) for k in expected} != expected:
                response.failure(f"body {response.text[:300]}")
            elif response.headers.get("x-request-id") != request_id:
                response.failure(f"x-request-id {response.headers.get('x-request-id')!r}")

    @task(3)
    def counter(self) -> None:
        with self.client.get("/counter", catch_response=True) as response:
            body = _json(response)
            hits = body.get("hits") if isinstance(body, dict) else None
            if response.status_code != 200:
                response.failure(f"status {response.status_code}: {response.text[:200]}")
            elif type(hits) is not int or hits < 1:
                response.failure(f"body {response.text[:200]}")

    @task(1)
    def slow(self) -> None:
        with self.client.get("/slow?delay=0.05", name="/slow?delay=0.05", catch_response=True) as response:
            if response.status_code != 200:
                response.failure(f"status {response.status_code}: {response.text[:200]}")
            elif _json(response) != {"slept": 0.05}:
                response.failure(f"body {response.text[:200]}")
            elif response.headers.get("cache-control") != "no-store":
                response.failure(f"cache-control {response.headers.get('cache-control')!r}")
