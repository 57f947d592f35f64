"""A real node serving `kind = "lambda"` and `kind = "openfaas"` functions over HTTP: their routes,
the Lambda invoke API, errors, signature mismatches, and the examples."""

from __future__ import annotations

import base64
import http.client
import json
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from node_harness import Node, NodeFactory, Reply, write_function

from loadtest._servers import ROOT, Server, free_port

EDGE = [sys.executable, "-m", "edge"]

# Answers what it got: an HTTP event (as API Gateway would) or an invoked event (as JSON).
ECHO_EVENT = """
    import json

    def handler(event, context):
        if "requestContext" not in event:
            if event.get("fail"):
                raise ValueError("asked to fail: " + str(event["fail"]))
            return {"invoked": event, "function": context.function_name}
        if event.get("queryStringParameters", {}).get("fail"):
            raise RuntimeError("failed over HTTP")
        return {
            "statusCode": 201,
            "headers": {"content-type": "application/json", "x-kind": "lambda"},
            "cookies": ["a=1; Path=/", "b=2"],
            "body": json.dumps({
                "event": event,
                "function": context.function_name,
                "remaining": context.get_remaining_time_in_millis(),
            }),
        }
"""

ECHO_V1 = """
    import json

    def handler(event, context):
        return {
            "statusCode": 200,
            "multiValueHeaders": {"x-many": ["1", "2"]},
            "body": json.dumps(event),
        }
"""

ASYNC_LAMBDA = """
    import asyncio

    async def handler(event, context):
        await asyncio.sleep(0.01)
        return {"async": True, "path": event.get("rawPath")}
"""

FAAS = """
    def handle(event, context):
        return {
            "statusCode": 202,
            "headers": {"X-Method": event.method},
            "body": {"path": event.path, "body": event.body.decode(), "q": event.query.getlist("q")},
        }
"""

MEMORY = """
    def handler(event, context):
        return {"memory": context.memory_limit_in_mb, "event": event}
"""

EDGE_HANDLER = """
    def handler(request):
        return "edge"
"""


def error_of(reply: Reply) -> str:
    """The message of a node error reply, checking its JSON shape and request id."""
    assert reply.headers["content-type"] == "application/json"
    payload = reply.json()
    assert payload == {"error": payload["error"], "request_id": reply.headers["x-request-id"]}
    error: str = payload["error"]
    return error


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    root = tmp_path_factory.mktemp("kinds") / "functions"
    write_function(root, "lam", ECHO_EVENT, 'kind = "lambda"\n')
    write_function(root, "lam-v1", ECHO_V1, 'kind = "lambda"\nlambda_payload = "1.0"\n')
    write_function(root, "lam-async", ASYNC_LAMBDA, 'kind = "lambda"\n')
    write_function(root, "faas", FAAS, 'kind = "openfaas"\nentrypoint = "main:handle"\n')
    write_function(root, "lam-proc", MEMORY, 'kind = "lambda"\nisolation = "process"\nmemory_mb = 96\n')
    write_function(root, "lam-memory", MEMORY, 'kind = "lambda"\n')
    write_function(root, "plain", EDGE_HANDLER)
    write_function(root, "wrong", EDGE_HANDLER, 'kind = "lambda"\n')
    for example in ("lambda-hello", "openfaas-hello"):
        shutil.copytree(ROOT / "examples" / example, root / example)
    port = free_port()
    log = root.parent / "node.log"
    argv = [*EDGE, "node", "--functions", str(root), "--port", str(port)]
    server = Server(argv, f"http://127.0.0.1:{port}/_edge/ready", log_path=log)
    server.start(60)
    try:
        yield Node(port, log, server)
    finally:
        server.stop()


def test_a_lambda_function_gets_a_2_0_event_and_its_result_becomes_http(node: Node) -> None:
    reply = node.get(
        "/lam/items?id=1&id=2&x=y",
        method="POST",
        body=b'{"a": 1}',
        headers={"Content-Type": "application/json", "Cookie": "c1=1; c2=2", "X-Test": "t"},
    )
    assert reply.status == 201
    assert reply.headers["x-kind"] == "lambda"
    payload = reply.json()
    event = payload["event"]
    assert payload["function"] == "lam"
    assert 0 < payload["remaining"] <= 30_000
    assert (event["version"], event["routeKey"], event["rawPath"]) == ("2.0", "$default", "/lam/items")
    assert event["rawQueryString"] == "id=1&id=2&x=y"
    assert event["queryStringParameters"] == {"id": "1,2", "x": "y"}
    assert event["cookies"] == ["c1=1", "c2=2"]
    assert event["headers"]["x-test"] == "t"
    assert "cookie" not in event["headers"]
    assert (event["body"], event["isBase64Encoded"]) == ('{"a": 1}', False)
    http = event["requestContext"]["http"]
    assert (http["method"], http["path"], http["sourceIp"]) == ("POST", "/lam/items", "127.0.0.1")
    assert event["requestContext"]["requestId"] == reply.headers["x-request-id"]


def test_cookies_become_set_cookie_headers(node: Node) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", node.port, timeout=10)
    try:
        connection.request("GET", "/lam")
        response = connection.getresponse()
        response.read()
        assert response.headers.get_all("set-cookie") == ["a=1; Path=/", "b=2"]
    finally:
        connection.close()


def test_a_binary_body_reaches_the_handler_base64_encoded(node: Node) -> None:
    body = bytes(range(256))
    reply = node.get("/lam", method="PUT", body=body, headers={"Content-Type": "application/octet-stream"})
    event = reply.json()["event"]
    assert event["isBase64Encoded"] is True
    assert base64.b64decode(event["body"]) == body


def test_a_lambda_function_with_payload_1_0(node: Node) -> None:
    reply = node.get("/lam-v1/a/b?k=1&k=2", headers={"X-Twice": "1"})
    assert reply.status == 200
    assert reply.headers["content-type"] == "application/json"
    event = reply.json()
    assert (event["httpMethod"], event["path"], event["resource"]) == ("GET", "/lam-v1/a/b", "/{proxy+}")
    assert event["queryStringParameters"] == {"k": "2"}
    assert event["multiValueQueryStringParameters"] == {"k": ["1", "2"]}
    assert event["pathParameters"] == {"proxy": "lam-v1/a/b"}
    assert event["multiValueHeaders"]["x-twice"] == ["1"]
    assert event["requestContext"]["identity"]["sourceIp"] == "127.0.0.1"


def test_an_exception_over_http_is_the_usual_500(node: Node) -> None:
    reply = node.get("/lam?fail=1")
    assert reply.status == 500
    assert error_of(reply) == "RuntimeError: failed over HTTP"


def test_the_invoke_api_passes_the_json_body_as_the_event(node: Node) -> None:
    reply = node.get("/2015-03-31/functions/lam/invocations", method="POST", body=b'{"n": [1, 2]}')
    assert reply.status == 200
    assert reply.headers["content-type"] == "application/json"
    assert reply.json() == {"invoked": {"n": [1, 2]}, "function": "lam"}
    empty = node.get("/2015-03-31/functions/lam/invocations", method="POST", body=b"")
    assert empty.json() == {"invoked": {}, "function": "lam"}


def test_the_invoke_api_on_an_async_handler(node: Node) -> None:
    reply = node.get("/2015-03-31/functions/lam-async/invocations", method="POST", body=b"{}")
    assert reply.json() == {"async": True, "path": None}
    assert node.get("/lam-async/x").json() == {"async": True, "path": "/lam-async/x"}


def test_an_exception_via_invoke_is_answered_as_the_rie_does_and_logged(node: Node) -> None:
    reply = node.get("/2015-03-31/functions/lam/invocations", method="POST", body=b'{"fail": "yes"}')
    assert reply.status == 200
    assert reply.headers["x-amz-function-error"] == "Unhandled"
    error = reply.json()
    assert error["errorMessage"] == "asked to fail: yes"
    assert error["errorType"] == "ValueError"
    assert error["requestId"] == reply.headers["x-request-id"]
    assert len(error["stackTrace"]) == 1
    assert error["stackTrace"][0].startswith('  File "') and ", in handler\n" in error["stackTrace"][0]
    assert "ValueError: asked to fail: yes" in node.log_text()


def test_a_process_isolated_lambda_function_is_told_its_memory_limit(node: Node) -> None:
    reply = node.get("/2015-03-31/functions/lam-proc/invocations", method="POST", body=b'{"x": 1}')
    assert reply.json() == {"memory": "96", "event": {"x": 1}}
    reply = node.get("/2015-03-31/functions/lam-memory/invocations", method="POST", body=b"[]")
    assert reply.json() == {"memory": "0", "event": []}


def test_an_invocation_whose_body_is_not_json_is_a_400(node: Node) -> None:
    reply = node.get("/2015-03-31/functions/lam/invocations", method="POST", body=b"not json")
    assert reply.status == 400
    assert error_of(reply) == (
        "the invoke API's body is not JSON (Expecting value: line 1 column 1 (char 0)); "
        "send the event as JSON (an empty body is {})"
    )


def test_the_invoke_api_refuses_a_function_of_another_kind(node: Node) -> None:
    reply = node.get("/2015-03-31/functions/plain/invocations", method="POST", body=b"{}")
    assert reply.status == 400
    assert error_of(reply) == 'function plain is kind = "edge"; the invoke API calls kind = "lambda"'


def test_an_openfaas_function(node: Node) -> None:
    reply = node.get("/faas/sub?q=1&q=2", method="POST", body=b"payload")
    assert reply.status == 202
    assert reply.headers["x-method"] == "POST"
    assert reply.headers["content-type"] == "application/json"
    assert reply.json() == {"path": "/faas/sub", "body": "payload", "q": ["1", "2"]}


def test_an_edge_handler_given_kind_lambda_is_a_503_that_names_the_fix(node: Node) -> None:
    reply = node.get("/wrong")
    assert reply.status == 503
    assert error_of(reply) == (
        "function wrong failed to load: "
        "kind = 'lambda' expects handler(event, context); entrypoint 'main:handler' takes (request): "
        'this looks like an edge handler(request): set `kind = "edge"` (the default) in edge.toml'
    )


def test_the_examples_serve(node: Node) -> None:
    reply = node.get("/lambda-hello?name=Ada")
    assert reply.status == 200
    assert reply.json() == {"message": "hello Ada", "request_id": reply.headers["x-request-id"]}
    invoked = node.get(
        "/2015-03-31/functions/lambda-hello/invocations", method="POST", body=b'{"name": "Bo"}'
    )
    assert json.loads(invoked.json()["body"])["message"] == "hello Bo"
    reply = node.get("/openfaas-hello", method="POST", body=b"hi")
    assert (reply.status, reply.body) == (200, b"hello from POST /openfaas-hello: hi")


def test_the_function_path_invokes_the_nodes_only_lambda_function(
    start_node: NodeFactory, tmp_path: Path
) -> None:
    root = tmp_path / "functions"
    write_function(root, "only", ECHO_EVENT, 'kind = "lambda"\n')
    write_function(root, "plain", EDGE_HANDLER)
    node = start_node(root)
    reply = node.get("/2015-03-31/functions/function/invocations", method="POST", body=b'{"k": "v"}')
    assert reply.status == 200
    assert reply.json() == {"invoked": {"k": "v"}, "function": "only"}
    assert node.get("/2015-03-31/functions/only/invocations", method="GET").status == 405
