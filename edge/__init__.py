"""The edge node, the origin, the control channel and the `edge` command."""

__all__: list[str] = []
