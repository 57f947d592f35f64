"""Per-function isolates: the pool, the backends, and the guest runtime that runs inside them."""

__all__: list[str] = []
