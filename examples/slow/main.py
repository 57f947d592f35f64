import asyncio

from edgefn import Response


async def handler(request):
    delay = float(request.query.get("delay", ["0.1"])[0])
    await asyncio.sleep(delay)
    return Response({"slept": delay}, headers={"cache-control": "no-store"})
