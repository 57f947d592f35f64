import time

from edgefn import Response


def handler(request):
    # Fresh for an hour on the edge; tagged so `edge purge cached --tag greeting` removes it.
    headers = {"cache-control": "public, max-age=3600", "cache-tag": "greeting"}
    return Response(f"rendered at {time.time():.3f}\n", headers=headers)
