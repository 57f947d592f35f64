"""The origin: stores versions, signs the desired state and drives nodes over the control channel."""

__all__: list[str] = []
