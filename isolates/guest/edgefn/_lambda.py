"""kind = "lambda": an AWS Lambda `handler(event, context)` behind HTTP and the Lambda invoke API.

An HTTP request becomes an API Gateway proxy event, payload format 2.0 (HTTP API, function URLs;
the default) or 1.0 (`lambda_payload = "1.0"`: HTTP API 1.0 / REST API proxy), and the handler's
result becomes HTTP as API Gateway converts it. A direct invocation (`POST
/2015-03-31/functions/<name>/invocations`, method "<invoke>") passes the JSON body as the event
and answers the result as JSON, errors as the Runtime Interface Emulator (RIE) does.

What a node puts where AWS has an account, an API or a stage:

- `requestContext.accountId` "012345678912" and the ARN
  `arn:aws:lambda:<AWS_REGION or us-east-1>:012345678912:function:<name>`: the RIE's placeholders;
- `apiId` the function's name; `domainName` the request's Host (`domainPrefix` its first label);
- `stage` and `routeKey` "$default"; 1.0: `resource`/`resourcePath` "/{proxy+}" and
  `pathParameters` {"proxy": the path without its leading "/"} (null for "/"), as a REST API's
  catch-all proxy resource; `stageVariables` null (absent in 2.0); `protocol` "HTTP/1.1";
- `path`/`rawPath` the whole request path (the function's route prefix included);
- 1.0 header names are lower-case (the node receives them so), not as the client wrote them;
- bodies: text (`isBase64Encoded` false) for `text/*`, JSON, XML and JavaScript content types
  that are UTF-8; any other body is base64 (function URLs do the same; a REST API would need
  binary media types configured);
- results: payload 2.0 takes a dict with `statusCode` as the response, any other JSON value as a
  200 `application/json` body (a str as is, as HTTP APIs document; function URLs would keep the
  quotes); 1.0 requires `statusCode` (AWS answers 502 without it; here a TypeError, 500). A
  response without content-type gets `text/plain; charset=utf-8` (2.0) or `application/json`
  (1.0), or `application/octet-stream` when `isBase64Encoded`;
- context: `aws_request_id` the node's request id, `function_version` the deployed version,
  `memory_limit_in_mb` the isolate's memory limit as a string, as Lambda's runtime gives it ("0":
  no per-function limit, interpreter isolation), `log_group_name` "/aws/lambda/<name>",
  `client_context` and `identity` None.
"""

from __future__ import annotations

import base64
import json
import os
import sys
import time
from urllib.parse import parse_qsl

from . import Response
from ._kinds import Adapted, KindError, guess, mismatch, positional

TYPE_CHECKING = False  # importing typing would cost ~10 ms of every cold start
if TYPE_CHECKING:
    from typing import Any

    from . import Request

__all__ = ["LambdaContext", "adapt", "event_v1", "event_v2"]

# The method of a direct invocation (isolates/backends/__init__.py has the same).
INVOKE_METHOD = "<invoke>"
ACCOUNT_ID = "012345678912"

_TEXT_TYPES = ("application/json", "application/javascript", "application/xml", "application/x-javascript")
_JSON_HEADERS = [("content-type", "application/json")]
_CO_COROUTINE = 0x80


class LambdaContext:
    """The `context` argument, with the attributes and methods of Lambda's Python runtime."""

    __slots__ = (
        "_deadline",
        "aws_request_id",
        "client_context",
        "function_name",
        "function_version",
        "identity",
        "invoked_function_arn",
        "log_group_name",
        "log_stream_name",
        "memory_limit_in_mb",
    )

    def __init__(self, request: Request, arn: str, memory: str) -> None:
        context = request.context
        self.aws_request_id = context.request_id
        self.function_name = context.function
        self.function_version = context.version
        self.invoked_function_arn = arn
        self.memory_limit_in_mb = memory
        self.log_group_name = f"/aws/lambda/{context.function}"
        self.log_stream_name = context.version
        self.client_context = None
        self.identity = None
        self._deadline = context

    def get_remaining_time_in_millis(self) -> int:
        """Milliseconds left before the request times out (never negative)."""
        return self._deadline.remaining_ms

    def log(self, message: object) -> None:
        """Write to the function's log, as Lambda's `context.log` does."""
        sys.stdout.write(str(message))

    def __repr__(self) -> str:
        return f"LambdaContext(function_name={self.function_name!r}, aws_request_id={self.aws_request_id!r})"


def adapt(target: Any, options: dict[str, Any], entrypoint: str) -> Adapted:
    """`target(event, context)` as an edge handler; raises KindError when it does not take two arguments."""
    shape = positional(target)
    if shape is not None and (not shape[0] <= 2 <= shape[1] or guess(target) in ("asgi", "wsgi")):
        raise mismatch("lambda", "handler(event, context)", target, entrypoint)
    payload = options.get("lambda_payload", "2.0")
    if payload not in ("1.0", "2.0"):
        raise KindError(f'lambda_payload = {payload!r} is not a payload format; expected "2.0" or "1.0"')
    build, convert = (event_v2, _result_v2) if payload == "2.0" else (event_v1, _result_v1)
    region = os.environ.get("AWS_REGION", "us-east-1")
    memory = str(options.get("memory_mb", 0))
    arns: dict[str, str] = {}

    def context_of(request: Request) -> LambdaContext:
        name = request.context.function
        arn = arns.get(name)
        if arn is None:
            arn = arns[name] = f"arn:aws:lambda:{region}:{ACCOUNT_ID}:function:{name}"
        return LambdaContext(request, arn, memory)

    if _is_async(target):

        async def serve_async(request: Request) -> Any:
            if request.method == INVOKE_METHOD:
                event = _invoked_event(request)
                if isinstance(event, Response):
                    return event
                try:
                    result = await target(event, context_of(request))
                except Exception as exc:
                    return _invoke_error(exc, request)
                return _invoke_result(result, request)
            return convert(await target(build(request), context_of(request)))

        return Adapted(serve_async)

    def serve(request: Request) -> Any:
        if request.method == INVOKE_METHOD:
            event = _invoked_event(request)
            if isinstance(event, Response):
                return event
            try:
                result = target(event, context_of(request))
            except Exception as exc:
                return _invoke_error(exc, request)
            return _invoke_result(result, request)
        return convert(target(build(request), context_of(request)))

    return Adapted(serve)


def _is_async(target: Any) -> bool:
    code = getattr(target, "__code__", None)
    if code is None:
        code = getattr(type(target).__dict__.get("__call__"), "__code__", None)
    return bool(code is not None and code.co_flags & _CO_COROUTINE)


# -- HTTP request -> event ---------------------------------------------------------------------

_clock_second = -1
_clock_text = ""


def _request_time(second: int) -> str:
    """`12/Mar/2020:19:03:58 +0000` for a Unix time (callers reuse it within the same second)."""
    global _clock_second, _clock_text
    _clock_text = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(second))
    _clock_second = second
    return _clock_text


def _body(request: Request, content_type: str) -> tuple[str, bool]:
    """(the non-empty body as the event carries it, isBase64Encoded)."""
    body = request.body
    kind = content_type.partition(";")[0].strip().lower()
    if kind.startswith("text/") or kind in _TEXT_TYPES or kind.endswith(("+json", "+xml")):
        try:
            return body.decode(), False
        except UnicodeDecodeError:
            pass
    return base64.b64encode(body).decode("ascii"), True


def event_v2(request: Request) -> dict[str, Any]:
    """The payload format 2.0 event (HTTP API, function URL) for an HTTP request."""
    headers: dict[str, str] = {}
    cookies: list[str] = []
    for raw_name, raw_value in request.headers._pairs():
        name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
        if name == "cookie":
            cookies.extend(part for piece in value.split(";") if (part := piece.strip()))
        elif name in headers:
            headers[name] = f"{headers[name]},{value}"
        else:
            headers[name] = value
    host = headers.get("host", "localhost")
    now = time.time()
    second = int(now)
    context = request.context
    path = request.path
    client = request.client
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": request.query_string,
    }
    if cookies:
        event["cookies"] = cookies
    event["headers"] = headers
    if request.query_string:
        query: dict[str, str] = {}
        for name, value in parse_qsl(request.query_string, keep_blank_values=True):
            query[name] = f"{query[name]},{value}" if name in query else value
        event["queryStringParameters"] = query
    event["requestContext"] = {
        "accountId": ACCOUNT_ID,
        "apiId": context.function,
        "domainName": host,
        "domainPrefix": host.partition(".")[0],
        "http": {
            "method": request.method,
            "path": path,
            "protocol": "HTTP/1.1",
            "sourceIp": client.rpartition(":")[0] if client else "",
            "userAgent": headers.get("user-agent", ""),
        },
        "requestId": context.request_id,
        "routeKey": "$default",
        "stage": "$default",
        "time": _clock_text if second == _clock_second else _request_time(second),
        "timeEpoch": int(now * 1000),
    }
    if request.body:
        event["body"], event["isBase64Encoded"] = _body(request, headers.get("content-type", ""))
    else:
        event["isBase64Encoded"] = False
    return event


_NO_IDENTITY = (
    "accessKey",
    "accountId",
    "caller",
    "cognitoAuthenticationProvider",
    "cognitoAuthenticationType",
    "cognitoIdentityId",
    "cognitoIdentityPoolId",
    "principalOrgId",
)


def event_v1(request: Request) -> dict[str, Any]:
    """The payload format 1.0 event (REST API proxy integration, HTTP API 1.0) for an HTTP request."""
    headers: dict[str, str] = {}
    multi_headers: dict[str, list[str]] = {}
    for raw_name, raw_value in request.headers._pairs():
        name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
        headers[name] = value
        multi_headers.setdefault(name, []).append(value)
    query: dict[str, str] | None = None
    multi_query: dict[str, list[str]] | None = None
    if request.query_string:
        query, multi_query = {}, {}
        for name, value in parse_qsl(request.query_string, keep_blank_values=True):
            query[name] = value
            multi_query.setdefault(name, []).append(value)
    host = headers.get("host", "localhost")
    user_agent = headers.get("user-agent", "")
    now = time.time()
    context = request.context
    path = request.path
    identity: dict[str, Any] = dict.fromkeys(_NO_IDENTITY)
    identity["sourceIp"] = request.client.rpartition(":")[0] if request.client else ""
    identity["user"] = None
    identity["userAgent"] = user_agent
    identity["userArn"] = None
    body, encoded = _body(request, headers.get("content-type", "")) if request.body else (None, False)
    second = int(now)
    return {
        "version": "1.0",
        "resource": "/{proxy+}",
        "path": path,
        "httpMethod": request.method,
        "headers": headers or None,
        "multiValueHeaders": multi_headers or None,
        "queryStringParameters": query,
        "multiValueQueryStringParameters": multi_query,
        "requestContext": {
            "accountId": ACCOUNT_ID,
            "apiId": context.function,
            "domainName": host,
            "domainPrefix": host.partition(".")[0],
            "extendedRequestId": context.request_id,
            "httpMethod": request.method,
            "identity": identity,
            "path": path,
            "protocol": "HTTP/1.1",
            "requestId": context.request_id,
            "requestTime": _clock_text if second == _clock_second else _request_time(second),
            "requestTimeEpoch": int(now * 1000),
            "resourceId": None,
            "resourcePath": "/{proxy+}",
            "stage": "$default",
        },
        "pathParameters": {"proxy": path[1:]} if len(path) > 1 else None,
        "stageVariables": None,
        "body": body,
        "isBase64Encoded": encoded,
    }


# -- result -> HTTP response -------------------------------------------------------------------


def _status(result: dict[str, Any]) -> int:
    status = result["statusCode"]
    if type(status) is str and status.isdigit():
        status = int(status)
    if type(status) is not int or not 100 <= status <= 599:
        raise TypeError(f"lambda handler returned statusCode {status!r}; expected an int from 100 to 599")
    return status


def _response_body(result: dict[str, Any]) -> bytes:
    body = result.get("body")
    if body is None:
        return b""
    if type(body) is not str:
        raise TypeError(
            f"lambda handler returned a body of type {type(body).__name__}; expected a str "
            "(json.dumps a dict, base64-encode bytes and set isBase64Encoded)"
        )
    if result.get("isBase64Encoded"):
        try:
            return base64.b64decode(body, validate=True)
        except ValueError:
            raise TypeError(
                "lambda handler returned isBase64Encoded true with a body that is not base64"
            ) from None
    return body.encode()


def _header_items(headers: Any, field: str) -> list[tuple[str, str]]:
    if not headers:
        return []
    if type(headers) is not dict:
        raise TypeError(f"lambda handler returned {field} of type {type(headers).__name__}; expected a dict")
    return [
        (name if type(name) is str else str(name), value if type(value) is str else _header_value(value))
        for name, value in headers.items()
    ]


def _header_value(value: Any) -> str:
    if value is True or value is False:
        return "true" if value else "false"
    return str(value)


def _with_type(headers: list[tuple[str, str]], default: str) -> list[tuple[str, str]]:
    for name, _ in headers:
        if name.lower() == "content-type":
            return headers
    headers.append(("content-type", default))
    return headers


def _result_v2(result: Any) -> Response:
    """A handler's return value as an HTTP API (payload 2.0) or function URL turns it into HTTP."""
    if type(result) is not dict or "statusCode" not in result:
        if type(result) is str:
            return Response(result.encode(), 200, _JSON_HEADERS)
        return Response(_dumps(result).encode(), 200, _JSON_HEADERS)
    headers = _header_items(result.get("headers"), "headers")
    cookies = result.get("cookies")
    if cookies:
        if not isinstance(cookies, list):
            raise TypeError(
                f"lambda handler returned cookies of type {type(cookies).__name__}; expected a list of str"
            )
        headers.extend(("set-cookie", str(cookie)) for cookie in cookies)
    body = _response_body(result)
    default = "application/octet-stream" if result.get("isBase64Encoded") else "text/plain; charset=utf-8"
    return Response(body, _status(result), _with_type(headers, default))


def _result_v1(result: Any) -> Response:
    """A handler's return value as a REST API proxy integration (payload 1.0) turns it into HTTP."""
    if type(result) is not dict or "statusCode" not in result:
        what = "a dict without statusCode" if type(result) is dict else type(result).__name__
        raise TypeError(
            f"lambda handler returned {what}; payload 1.0 expects "
            '{"statusCode": int, "headers": {...}, "body": str} (API Gateway answers 502 otherwise)'
        )
    multi = result.get("multiValueHeaders")
    headers: list[tuple[str, str]] = []
    if multi:
        if not isinstance(multi, dict):
            raise TypeError(
                f"lambda handler returned multiValueHeaders of type {type(multi).__name__}; "
                "expected a dict of lists"
            )
        for name, values in multi.items():
            items = values if isinstance(values, list) else [values]
            headers.extend((str(name), _header_value(value)) for value in items)
    # A name in multiValueHeaders takes its values from there only (API Gateway merges the two).
    taken = {name.lower() for name, _ in headers}
    headers.extend(
        item for item in _header_items(result.get("headers"), "headers") if item[0].lower() not in taken
    )
    default = "application/octet-stream" if result.get("isBase64Encoded") else "application/json"
    return Response(_response_body(result), _status(result), _with_type(headers, default))


# -- the invoke API ----------------------------------------------------------------------------


def _invoked_event(request: Request) -> Any:
    """The event of a direct invocation: the JSON body ({} when empty), or a 400 Response."""
    if not request.body.strip():
        return {}
    try:
        return json.loads(request.body)
    except ValueError as exc:
        message = f"the invoke API's body is not JSON ({exc}); send the event as JSON (an empty body is {{}})"
        return Response({"error": message, "request_id": request.context.request_id}, 400)


def _decimal(value: Any) -> Any:
    # Lambda's runtime answers Decimal (DynamoDB's numbers) as JSON numbers.
    if type(value).__name__ == "Decimal":
        return int(value) if value == value.to_integral_value() else float(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _dumps(value: Any) -> str:
    return json.dumps(value, default=_decimal)


def _invoke_result(result: Any, request: Request) -> Response:
    if type(result) is bytes:  # Lambda's runtime answers bytes as they are
        return Response(result, 200, [("content-type", "application/unknown")])
    try:
        body = _dumps(result)
    except (TypeError, ValueError) as exc:
        return _error_response(
            "Runtime.MarshalError", f"Unable to marshal response: {exc}", [], request.context.request_id
        )
    return Response(body.encode(), 200, _JSON_HEADERS)


def _invoke_error(exc: Exception, request: Request) -> Response:
    """An exception as the RIE answers it (200, X-Amz-Function-Error: Unhandled); logged to stderr."""
    import traceback

    frames = traceback.extract_tb(exc.__traceback__)
    # The first frame is this adapter's call of the handler: the trace starts in the function's code.
    stack = traceback.format_list(frames[1:] if frames and frames[0].filename == __file__ else frames)
    sys.stderr.write("".join(traceback.format_exception(exc)))
    return _error_response(type(exc).__name__, str(exc), stack, request.context.request_id)


def _error_response(kind: str, message: str, stack: list[str], request_id: str) -> Response:
    body = {"errorMessage": message, "errorType": kind, "requestId": request_id, "stackTrace": stack}
    headers = [*_JSON_HEADERS, ("x-amz-function-error", "Unhandled")]
    return Response(json.dumps(body).encode(), 200, headers)
