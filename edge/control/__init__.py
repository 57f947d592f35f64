"""The control channel between origin and nodes: messages, signing, the client, the poll loop."""

__all__: list[str] = []
