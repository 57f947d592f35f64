"""The `lambda` and `openfaas` kinds' adapters, in-process: events against AWS's documented examples
(tests/fixtures/lambda/), every documented result shape, the invoke API, signature checks."""

from __future__ import annotations

import asyncio
import base64
import inspect
import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from isolates.guest.edgefn import Context, Headers, Request
from isolates.guest.edgefn._kinds import KindError, adapt
from isolates.guest.edgefn._wire import RESPONSE, encode

FIXTURES = Path(__file__).parent.parent / "fixtures" / "lambda"
INVOKE = "<invoke>"


def fixture(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((FIXTURES / name).read_text())
    return loaded


def make_request(
    method: str = "GET",
    path: str = "/fn",
    query: str = "",
    headers: list[tuple[str, str]] | None = None,
    body: bytes = b"",
    client: str = "203.0.113.7:50123",
    timeout: float = 5.0,
) -> Request:
    pairs = tuple((name.encode("latin-1"), value.encode("latin-1")) for name, value in headers or [])
    context = Context("fn", "v7", "req-1", time.monotonic() + timeout)
    return Request(method, path, query, Headers(pairs), body, context, client)


class Reply:
    """The response a node would send for one request."""

    def __init__(self, message: tuple[Any, ...]) -> None:
        assert message[0] == RESPONSE
        self.status: int = message[2]
        self.header_list = [(name.decode(), value.decode()) for name, value in message[3]]
        self.headers = dict(self.header_list)
        self.body: bytes = message[4]

    def json(self) -> Any:
        return json.loads(self.body)


def serve(
    handler: Callable[..., Any],
    request: Request,
    kind: str = "lambda",
    payload: str = "2.0",
    memory_mb: int = 0,
) -> Reply:
    adapted = adapt(
        kind, handler, {"lambda_payload": payload, "memory_mb": memory_mb, "timeout_ms": 5000}, "main:h"
    )
    result = adapted.handler(request)
    if asyncio.iscoroutine(result):
        result = asyncio.run(result)
    return Reply(encode(1, result))


def event_of(request: Request, payload: str = "2.0") -> dict[str, Any]:
    seen: list[Any] = []

    def handler(event: Any, context: Any) -> Any:
        seen.append(event)
        return {"statusCode": 204}

    serve(handler, request, payload=payload)
    # What the handler got is plain JSON data, as API Gateway sends it.
    assert json.loads(json.dumps(seen[0])) == seen[0]
    event: dict[str, Any] = seen[0]
    return event


# -- events against the documented examples -----------------------------------------------------

TIME = re.compile(r"\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d \+0000")
# Fields that are per request or per deployment: compared for shape, not value.
SHAPES: dict[str, Callable[[Any], bool]] = {
    "requestContext.accountId": lambda value: value == "012345678912",
    "requestContext.apiId": lambda value: value == "fn",
    "requestContext.domainName": lambda value: value == "fn.example.test",
    "requestContext.domainPrefix": lambda value: value == "fn",
    "requestContext.requestId": lambda value: value == "req-1",
    "requestContext.extendedRequestId": lambda value: value == "req-1",
    "requestContext.time": lambda value: bool(TIME.fullmatch(value)),
    "requestContext.requestTime": lambda value: bool(TIME.fullmatch(value)),
    "requestContext.timeEpoch": lambda value: abs(value - time.time() * 1000) < 60_000,
    "requestContext.requestTimeEpoch": lambda value: abs(value - time.time() * 1000) < 60_000,
    "requestContext.http.sourceIp": lambda value: value == "203.0.113.7",
    "requestContext.identity.sourceIp": lambda value: value == "203.0.113.7",
    # A node is one catch-all proxy resource in one "$default" stage (see _lambda's docstring).
    "resource": lambda value: value == "/{proxy+}",
    "requestContext.resourcePath": lambda value: value == "/{proxy+}",
    "requestContext.resourceId": lambda value: value is None,
    "requestContext.stage": lambda value: value == "$default",
    "pathParameters": lambda value: value == {"proxy": "my/path"},
}
# What a node has no counterpart for (authorizers, mTLS, stage variables): absent (2.0) or null.
NOT_ON_A_NODE = {
    "requestContext.authentication",
    "requestContext.authorizer",
    "requestContext.identity.clientCert",
    "requestContext.identity.apiKey",
    "stageVariables",
}


def compare(ours: dict[str, Any], documented: dict[str, Any], exact: bool, where: str = "") -> None:
    """Every documented field is in `ours` with the documented value (or shape); `exact`: no others."""
    for key, value in documented.items():
        place = f"{where}{key}"
        if place in NOT_ON_A_NODE or (place == "pathParameters" and ours.get("version") == "2.0"):
            assert ours.get(key) is None, place
            continue
        assert key in ours, f"{place} missing"
        if place in SHAPES:
            assert SHAPES[place](ours[key]), (place, ours[key])
        elif key in ("headers", "multiValueHeaders"):
            # The node receives header names lower-case; the request also carried host, user-agent...
            lowered = {name.lower(): field for name, field in value.items()}
            assert lowered.items() <= ours[key].items(), (place, ours[key])
        elif isinstance(value, dict):
            compare(ours[key], value, exact, f"{place}.")
        else:
            assert ours[key] == value, (place, ours[key], value)
    if exact:
        documented_keys = {key for key in documented if f"{where}{key}" not in NOT_ON_A_NODE}
        documented_keys |= {key for key in ours if f"{where}{key}" in NOT_ON_A_NODE and ours[key] is None}
        if where == "" and ours.get("version") == "2.0":
            documented_keys.discard("pathParameters")
        assert set(ours) == documented_keys, (where, set(ours) ^ documented_keys)


V2_REQUEST = {
    "method": "POST",
    "path": "/my/path",
    "query": "parameter1=value1&parameter1=value2&parameter2=value",
    "headers": [
        ("host", "fn.example.test"),
        ("user-agent", "agent"),
        ("content-type", "text/plain"),
        ("header1", "value1"),
        ("header2", "value1"),
        ("cookie", "cookie1; cookie2"),
        ("header2", "value2"),
    ],
}


def test_the_2_0_event_has_every_field_of_the_http_api_example() -> None:
    event = event_of(make_request(**V2_REQUEST, body=b"Hello from Lambda"))  # type: ignore[arg-type]
    compare(event, fixture("apigw-http-v2.json"), exact=True)
    assert "cookie" not in event["headers"]


def test_the_2_0_event_has_every_field_of_the_function_url_example() -> None:
    event = event_of(make_request(**V2_REQUEST, body=b"Hello from client!"))  # type: ignore[arg-type]
    compare(event, fixture("function-url-v2.json"), exact=True)


def test_the_2_0_event_leaves_out_what_the_request_does_not_have() -> None:
    event = event_of(make_request("GET", "/", headers=[("host", "localhost:8080")]))
    assert "cookies" not in event
    assert "queryStringParameters" not in event
    assert "body" not in event
    assert event["isBase64Encoded"] is False
    assert event["rawQueryString"] == ""
    assert event["requestContext"]["domainName"] == "localhost:8080"


def test_the_1_0_event_has_every_field_of_the_http_api_example() -> None:
    request = make_request(
        "GET",
        "/my/path",
        "parameter1=value1&parameter1=value2&parameter2=value",
        [
            ("host", "fn.example.test"),
            ("user-agent", "user-agent"),
            ("content-type", "text/plain; charset=utf-8"),
            ("header1", "value1"),
            ("header2", "value1"),
            ("header2", "value2"),
        ],
        b"Hello from Lambda!",
    )
    event = event_of(request, payload="1.0")
    documented = fixture("apigw-http-v1.json")
    # This page shows the first of two values; the REST API page (and the header fields of this
    # one) show the last, which is what the node gives.
    assert documented["queryStringParameters"]["parameter1"] == "value1"
    documented["queryStringParameters"]["parameter1"] = "value2"
    compare(event, documented, exact=True)
    assert event["headers"]["header2"] == "value2"  # the last value; all of them in multiValueHeaders


def test_the_1_0_event_matches_the_rest_api_proxy_example() -> None:
    documented = fixture("apigw-rest-proxy-v1.json")
    request = make_request(
        "POST",
        "/hello/world",
        "name=me&multivalueName=you&multivalueName=me",
        [(name, value) for name, values in documented["multiValueHeaders"].items() for value in values],
        documented["body"].encode(),
        client="192.168.196.186:50000",
    )
    event = event_of(request, payload="1.0")
    SHAPES_REST = {
        "requestContext.identity.sourceIp": "192.168.196.186",
        "requestContext.domainName": "gy415nuibc.execute-api.us-east-1.amazonaws.com",
    }
    for place, value in SHAPES_REST.items():
        section, _, key = place.rpartition(".")
        holder = event
        for part in section.split("."):
            holder = holder[part]
        assert holder[key] == value
    documented["requestContext"]["identity"]["sourceIp"] = "203.0.113.7"  # the SHAPES value
    event["requestContext"]["identity"]["sourceIp"] = "203.0.113.7"
    documented["pathParameters"] = {"proxy": "my/path"}
    event["pathParameters"] = {"proxy": "my/path"}
    compare(event, documented, exact=False)
    assert event["queryStringParameters"] == {"name": "me", "multivalueName": "me"}
    assert event["multiValueQueryStringParameters"] == {"name": ["me"], "multivalueName": ["you", "me"]}


def test_the_1_0_event_without_query_body_or_path_has_nulls() -> None:
    event = event_of(make_request("GET", "/"), payload="1.0")
    assert event["queryStringParameters"] is None
    assert event["multiValueQueryStringParameters"] is None
    assert event["pathParameters"] is None
    assert event["body"] is None
    assert event["isBase64Encoded"] is False


@pytest.mark.parametrize("payload", ["2.0", "1.0"])
@pytest.mark.parametrize(
    ("content_type", "body", "encoded"),
    [
        ("application/json", b'{"a": 1}', False),
        ("text/plain; charset=utf-8", "héllo".encode(), False),
        ("application/vnd.api+json", b"{}", False),
        ("application/xml", b"<a/>", False),
        ("image/png", b"\x89PNG\r\n\x1a\n\x00", True),
        ("application/octet-stream", b"\x00\x01\x02", True),
        ("application/x-www-form-urlencoded", b"a=1&b=2", True),
        ("", b"no type", True),
        ("text/plain", b"\xff\xfe not utf-8", True),
    ],
)
def test_binary_request_bodies_are_base64_by_content_type(
    payload: str, content_type: str, body: bytes, encoded: bool
) -> None:
    headers = [("content-type", content_type)] if content_type else []
    event = event_of(make_request("POST", "/fn", headers=headers, body=body), payload=payload)
    assert event["isBase64Encoded"] is encoded
    assert event["body"] == (base64.b64encode(body).decode() if encoded else body.decode())


# -- results -> HTTP ----------------------------------------------------------------------------


def returning(value: Any) -> Callable[[Any, Any], Any]:
    def handler(event: Any, context: Any) -> Any:
        return value

    return handler


def test_2_0_a_str_result_is_a_json_200_with_the_string_as_body() -> None:
    reply = serve(returning("Hello from Lambda!"), make_request())
    assert (reply.status, reply.headers["content-type"], reply.body) == (
        200,
        "application/json",
        b"Hello from Lambda!",
    )


@pytest.mark.parametrize("value", [{"message": "Hello from Lambda!"}, [1, "two"], 42, None, True])
def test_2_0_any_other_json_value_without_status_code_is_a_json_200(value: Any) -> None:
    reply = serve(returning(value), make_request())
    assert (reply.status, reply.headers["content-type"]) == (200, "application/json")
    assert reply.json() == value


def test_2_0_the_custom_response_of_the_function_url_page() -> None:
    result = {
        "statusCode": 201,
        "headers": {"Content-Type": "application/json", "My-Custom-Header": "Custom Value"},
        "body": json.dumps({"message": "Hello, world!"}),
        "cookies": ["Cookie_1=Value1; Expires=21 Oct 2021 07:48 GMT", "Cookie_2=Value2; Max-Age=78000"],
        "isBase64Encoded": False,
    }
    reply = serve(returning(result), make_request())
    assert reply.status == 201
    assert reply.header_list == [
        ("content-type", "application/json"),
        ("my-custom-header", "Custom Value"),
        ("set-cookie", "Cookie_1=Value1; Expires=21 Oct 2021 07:48 GMT"),
        ("set-cookie", "Cookie_2=Value2; Max-Age=78000"),
    ]
    assert reply.json() == {"message": "Hello, world!"}


def test_2_0_a_status_code_response_without_headers_or_body() -> None:
    reply = serve(returning({"statusCode": 204}), make_request())
    assert (reply.status, reply.body, reply.headers["content-type"]) == (
        204,
        b"",
        "text/plain; charset=utf-8",
    )
    reply = serve(returning({"statusCode": "404", "body": "gone"}), make_request())
    assert (reply.status, reply.body) == (404, b"gone")


@pytest.mark.parametrize("payload", ["2.0", "1.0"])
def test_is_base64_encoded_bodies_are_decoded(payload: str) -> None:
    png = b"\x89PNG\r\n\x1a\n\x00\xff"
    result = {"statusCode": 200, "body": base64.b64encode(png).decode(), "isBase64Encoded": True}
    reply = serve(returning(result), make_request(), payload=payload)
    assert reply.body == png
    assert reply.headers["content-type"] == "application/octet-stream"
    result = {**result, "headers": {"content-type": "image/png"}}
    assert serve(returning(result), make_request(), payload=payload).headers["content-type"] == "image/png"


@pytest.mark.parametrize(
    ("result", "error"),
    [
        ({"statusCode": 99}, "lambda handler returned statusCode 99; expected an int from 100 to 599"),
        ({"statusCode": "ok"}, "lambda handler returned statusCode 'ok'; expected an int from 100 to 599"),
        (
            {"statusCode": 200, "body": {"a": 1}},
            "lambda handler returned a body of type dict; expected a str "
            "(json.dumps a dict, base64-encode bytes and set isBase64Encoded)",
        ),
        (
            {"statusCode": 200, "body": "not base64!", "isBase64Encoded": True},
            "lambda handler returned isBase64Encoded true with a body that is not base64",
        ),
        (
            {"statusCode": 200, "cookies": "a=1"},
            "lambda handler returned cookies of type str; expected a list of str",
        ),
        (
            {"statusCode": 200, "headers": [("a", "1")]},
            "lambda handler returned headers of type list; expected a dict",
        ),
    ],
)
def test_2_0_results_api_gateway_would_refuse_are_errors_that_say_what_to_return(
    result: dict[str, Any], error: str
) -> None:
    with pytest.raises(TypeError) as raised:
        serve(returning(result), make_request())
    assert str(raised.value) == error


def test_1_0_headers_and_multi_value_headers_are_merged() -> None:
    result = {
        "statusCode": 200,
        "headers": {"X-One": "1", "Set-Cookie": "ignored=1", "X-Count": 3},
        "multiValueHeaders": {"Set-Cookie": ["a=1", "b=2"], "X-Many": ["x", "y"]},
        "body": '{"ok": true}',
    }
    reply = serve(returning(result), make_request(), payload="1.0")
    assert reply.header_list == [
        ("set-cookie", "a=1"),
        ("set-cookie", "b=2"),
        ("x-many", "x"),
        ("x-many", "y"),
        ("x-one", "1"),
        ("x-count", "3"),
        ("content-type", "application/json"),
    ]
    assert reply.json() == {"ok": True}


@pytest.mark.parametrize(
    ("result", "what"),
    [({"body": "hi"}, "a dict without statusCode"), ("hi", "str"), ([1], "list")],
)
def test_1_0_requires_a_status_code(result: Any, what: str) -> None:
    with pytest.raises(TypeError) as raised:
        serve(returning(result), make_request(), payload="1.0")
    assert str(raised.value) == (
        f'lambda handler returned {what}; payload 1.0 expects {{"statusCode": int, "headers": {{...}}, '
        '"body": str} (API Gateway answers 502 otherwise)'
    )


def test_an_exception_over_http_propagates_for_the_runtime_to_answer_500() -> None:
    def handler(event: Any, context: Any) -> Any:
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        serve(handler, make_request())


# -- context ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("memory_mb", "memory"), [(0, "0"), (128, "128")])
def test_the_context_has_the_fields_of_lambdas_python_runtime(memory_mb: int, memory: str) -> None:
    seen: dict[str, Any] = {}

    def handler(event: Any, context: Any) -> Any:
        seen.update(
            aws_request_id=context.aws_request_id,
            function_name=context.function_name,
            function_version=context.function_version,
            invoked_function_arn=context.invoked_function_arn,
            memory_limit_in_mb=context.memory_limit_in_mb,
            log_group_name=context.log_group_name,
            log_stream_name=context.log_stream_name,
            client_context=context.client_context,
            identity=context.identity,
            remaining=context.get_remaining_time_in_millis(),
        )
        return {}

    serve(handler, make_request(timeout=2.0), memory_mb=memory_mb)
    remaining = seen.pop("remaining")
    assert 1000 < remaining <= 2000
    assert seen == {
        "aws_request_id": "req-1",
        "function_name": "fn",
        "function_version": "v7",
        "invoked_function_arn": "arn:aws:lambda:us-east-1:012345678912:function:fn",
        "memory_limit_in_mb": memory,
        "log_group_name": "/aws/lambda/fn",
        "log_stream_name": "v7",
        "client_context": None,
        "identity": None,
    }


def test_remaining_time_is_never_negative() -> None:
    seen: list[int] = []

    def handler(event: Any, context: Any) -> Any:
        seen.append(context.get_remaining_time_in_millis())
        return {}

    serve(handler, make_request(timeout=-1.0))
    assert seen == [0]


# -- async handlers -----------------------------------------------------------------------------


def test_an_async_handler_serves_http_and_invocations() -> None:
    async def handler(event: Any, context: Any) -> Any:
        await asyncio.sleep(0)
        if "rawPath" in event:
            return {"statusCode": 200, "body": event["rawPath"]}
        if event.get("fail"):
            raise KeyError("nope")
        return {"echo": event, "id": context.aws_request_id}

    adapted = adapt("lambda", handler, {"lambda_payload": "2.0", "memory_mb": 0, "timeout_ms": 1}, "m:h")
    assert inspect.iscoroutinefunction(adapted.handler)
    assert serve(handler, make_request(path="/fn/x")).body == b"/fn/x"
    assert serve(handler, make_request(INVOKE, body=b'{"a": 1}')).json() == {"echo": {"a": 1}, "id": "req-1"}
    failed = serve(handler, make_request(INVOKE, body=b'{"fail": true}'))
    assert failed.headers["x-amz-function-error"] == "Unhandled"
    assert failed.json()["errorType"] == "KeyError"


# -- the invoke API -----------------------------------------------------------------------------


def test_an_invocation_passes_the_json_body_and_answers_json() -> None:
    seen: list[Any] = []

    def handler(event: Any, context: Any) -> Any:
        seen.append(event)
        return {"statusCode": 302, "answer": [1, 2]}  # not converted to HTTP: plain JSON

    reply = serve(handler, make_request(INVOKE, "/2015-03-31/functions/fn/invocations", body=b'{"x": [1]}'))
    assert seen == [{"x": [1]}]
    assert (reply.status, reply.headers) == (200, {"content-type": "application/json"})
    assert reply.json() == {"statusCode": 302, "answer": [1, 2]}
    serve(handler, make_request(INVOKE, body=b""))
    assert seen[-1] == {}


@pytest.mark.parametrize(("value", "body"), [("hi", b'"hi"'), (None, b"null"), (3, b"3")])
def test_an_invocation_answers_any_json_value(value: Any, body: bytes) -> None:
    assert serve(returning(value), make_request(INVOKE)).body == body


def test_an_invocation_answers_decimals_as_numbers_and_bytes_as_they_are() -> None:
    from decimal import Decimal

    assert serve(returning({"n": Decimal("2"), "f": Decimal("1.5")}), make_request(INVOKE)).json() == {
        "n": 2,
        "f": 1.5,
    }
    reply = serve(returning(b"\x00raw"), make_request(INVOKE))
    assert (reply.body, reply.headers["content-type"]) == (b"\x00raw", "application/unknown")


def test_an_invocation_whose_body_is_not_json_is_a_400() -> None:
    reply = serve(returning({}), make_request(INVOKE, body=b"{nope"))
    assert reply.status == 400
    assert reply.json() == {
        "error": "the invoke API's body is not JSON (Expecting property name enclosed in double quotes: "
        "line 1 column 2 (char 1)); send the event as JSON (an empty body is {})",
        "request_id": "req-1",
    }


def test_an_exception_in_an_invocation_is_answered_as_the_rie_does_and_logged(
    capsys: pytest.CaptureFixture[str],
) -> None:
    def handler(event: Any, context: Any) -> Any:
        return helper(event)

    def helper(event: Any) -> Any:
        raise ValueError(f"bad {event['n']}")

    reply = serve(handler, make_request(INVOKE, body=b'{"n": 3}'))
    assert reply.status == 200
    assert reply.headers == {"content-type": "application/json", "x-amz-function-error": "Unhandled"}
    error = reply.json()
    assert list(error) == ["errorMessage", "errorType", "requestId", "stackTrace"]
    assert (error["errorMessage"], error["errorType"], error["requestId"]) == ("bad 3", "ValueError", "req-1")
    # traceback.format_list entries, starting in the function's code (not the adapter's).
    assert [line.split(", in ")[1].split("\n")[0] for line in error["stackTrace"]] == ["handler", "helper"]
    assert all(line.startswith(f'  File "{__file__}", line ') for line in error["stackTrace"])
    logged = capsys.readouterr().err
    assert logged.startswith("Traceback (most recent call last):")
    assert logged.rstrip().endswith("ValueError: bad 3")


def test_a_result_that_is_not_json_is_a_marshal_error() -> None:
    reply = serve(returning({"when": object}), make_request(INVOKE))
    assert reply.headers["x-amz-function-error"] == "Unhandled"
    assert reply.json() == {
        "errorMessage": "Unable to marshal response: Object of type type is not JSON serializable",
        "errorType": "Runtime.MarshalError",
        "requestId": "req-1",
        "stackTrace": [],
    }


# -- signatures ---------------------------------------------------------------------------------


def edge_handler(request: Any) -> Any:
    return "hi"


async def asgi_app(scope: Any, receive: Any, send: Any) -> None:
    return None


def wsgi_app(environ: Any, start_response: Any) -> Any:
    return []


@pytest.mark.parametrize(("kind", "expected"), [("lambda", "handler"), ("openfaas", "handle")])
@pytest.mark.parametrize(
    ("target", "takes", "fix"),
    [
        (
            edge_handler,
            "(request)",
            'this looks like an edge handler(request): set `kind = "edge"` (the default)',
        ),
        (
            asgi_app,
            "(scope, receive, send)",
            'this looks like an ASGI application(scope, receive, send): set `kind = "asgi"`',
        ),
        (
            wsgi_app,
            "(environ, start_response)",
            'this looks like a WSGI application(environ, start_response): set `kind = "wsgi"`',
        ),
    ],
)
def test_an_entrypoint_of_another_shape_is_refused_with_the_fix(
    kind: str, expected: str, target: Any, takes: str, fix: str
) -> None:
    with pytest.raises(KindError) as raised:
        adapt(kind, target, {"lambda_payload": "2.0", "memory_mb": 0, "timeout_ms": 1}, "main:app")
    assert str(raised.value) == (
        f"kind = {kind!r} expects {expected}(event, context); entrypoint 'main:app' takes {takes}: "
        f"{fix} in edge.toml"
    )


def test_an_unknown_payload_format_is_refused() -> None:
    with pytest.raises(KindError) as raised:
        adapt("lambda", returning({}), {"lambda_payload": "3.0", "memory_mb": 0, "timeout_ms": 1}, "m:h")
    assert str(raised.value) == 'lambda_payload = \'3.0\' is not a payload format; expected "2.0" or "1.0"'


def test_a_method_and_a_callable_object_are_accepted() -> None:
    class Handlers:
        def handle(self, event: Any, context: Any) -> Any:
            return {"method": True}

        def __call__(self, event: Any, context: Any) -> Any:
            return {"call": True}

    assert serve(Handlers().handle, make_request()).json() == {"method": True}
    assert serve(Handlers(), make_request()).json() == {"call": True}


# -- openfaas -----------------------------------------------------------------------------------


def test_openfaas_event_and_context_are_the_templates() -> None:
    seen: dict[str, Any] = {}

    def handle(event: Any, context: Any) -> Any:
        seen.update(
            body=event.body,
            content_type=event.headers.get("Content-Type"),
            method=event.method,
            name=event.query["name"],
            names=event.query.getlist("name"),
            missing=event.query.get("missing"),
            path=event.path,
            hostname=context.hostname,
        )
        return {"statusCode": 200, "body": "ok"}

    request = make_request(
        "POST", "/fn/sub", "name=a&name=b", [("content-type", "application/json")], b'{"x": 1}'
    )
    reply = serve(handle, request, kind="openfaas")
    assert (reply.status, reply.body, reply.headers["content-type"]) == (
        200,
        b"ok",
        "text/html; charset=utf-8",
    )
    assert seen == {
        "body": b'{"x": 1}',
        "content_type": "application/json",
        "method": "POST",
        "name": "a",
        "names": ["a", "b"],
        "missing": None,
        "path": "/fn/sub",
        "hostname": seen["hostname"],
    }
    assert seen["hostname"]


@pytest.mark.parametrize(
    ("result", "status", "content_type", "body"),
    [
        (None, 200, "text/html; charset=utf-8", b""),
        ({}, 200, "text/html; charset=utf-8", b""),
        ({"statusCode": 201, "body": "made"}, 201, "text/html; charset=utf-8", b"made"),
        ({"body": {"a": 1}}, 200, "application/json", b'{"a":1}\n'),
        ({"body": 42}, 200, "text/html; charset=utf-8", b"42"),
        ({"body": b"\x00\x01"}, 200, "application/octet-stream", b"\x00\x01"),
        (
            {"statusCode": 400, "body": "x", "headers": {"Content-Type": "text/plain"}},
            400,
            "text/plain",
            b"x",
        ),
        ("plain", 200, "text/html; charset=utf-8", b"plain"),
        ([1, 2], 200, "application/json", b"[1,2]\n"),
    ],
)
def test_openfaas_results_go_through_format_response(
    result: Any, status: int, content_type: str, body: bytes
) -> None:
    reply = serve(returning(result), make_request(), kind="openfaas")
    assert (reply.status, reply.headers["content-type"], reply.body) == (status, content_type, body)


def test_openfaas_headers_as_a_list_keep_repeated_names() -> None:
    result = {"body": "", "headers": [("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")]}
    reply = serve(returning(result), make_request(), kind="openfaas")
    assert [value for name, value in reply.header_list if name == "set-cookie"] == ["a=1", "b=2"]


def test_openfaas_headers_that_are_not_pairs_are_an_error() -> None:
    with pytest.raises(TypeError) as raised:
        serve(returning({"headers": "x: 1"}), make_request(), kind="openfaas")
    assert str(raised.value) == (
        "openfaas handle returned headers 'x: 1'; expected a dict or a list of (name, value) pairs"
    )


def test_openfaas_async_handle_is_awaited() -> None:
    async def handle(event: Any, context: Any) -> Any:
        await asyncio.sleep(0)
        return {"statusCode": 202, "body": event.method}

    reply = serve(handle, make_request("PUT"), kind="openfaas")
    assert (reply.status, reply.body) == (202, b"PUT")
