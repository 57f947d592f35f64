import os

from edgefn import Request


def handler(request: Request):
    print(f"echo {request.method} {request.path}")
    return {
        "method": request.method,
        "path": request.path,
        "query": request.query,
        "headers": dict(request.headers),
        "body": request.text(),
        "greeting": os.environ.get("GREETING"),
        "function": request.context.function,
        "request_id": request.context.request_id,
    }
