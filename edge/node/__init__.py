"""The edge node: its ASGI app, router, settings, function sources and worker supervision."""
