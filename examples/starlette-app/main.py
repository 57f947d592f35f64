"""A Starlette app as an edge function: `kind = "asgi"`."""

import asyncio
import contextlib
import time

try:
    from starlette.applications import Starlette
except ModuleNotFoundError as exc:
    # Served from a directory without .deps/: say how to get Starlette instead of a bare import error.
    raise ModuleNotFoundError(
        f"{exc}: install requirements.txt into .deps/ (`edge deploy` does; locally: "
        "pip install --target .deps -r requirements.txt)",
        name=exc.name,
    ) from None
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.routing import Mount, Route


@contextlib.asynccontextmanager
async def lifespan(app):
    # Runs once when the isolate starts, before it takes requests; what it yields is request.state.
    yield {"started_at": time.time(), "greeting": "hello from the lifespan"}


async def home(request: Request):
    return PlainTextResponse(f"{request.state.greeting}, {request.query_params.get('name', 'world')}")


def item(request: Request):
    # A plain def: Starlette runs it in a worker thread (anyio), inside the isolate.
    item_id = request.path_params["item_id"]
    return JSONResponse({"id": item_id, "name": f"item {item_id}", "started_at": request.state.started_at})


async def events(request: Request):
    """Server-sent events: each one reaches the client as the app sends it."""
    count = int(request.query_params.get("count", "3"))

    async def stream():
        for number in range(count):
            yield f"data: {number}\n\n"
            await asyncio.sleep(0.2)

    return StreamingResponse(stream(), media_type="text/event-stream")


app = Starlette(
    routes=[
        Route("/starlette-app", home),  # without the trailing slash too, instead of a redirect
        Mount(
            "/starlette-app",
            routes=[
                Route("/", home),
                Route("/items/{item_id:int}", item),
                Route("/events", events),
            ],
        ),
    ],
    lifespan=lifespan,
)
