"""A node's secrets: its X25519 key, the values it was sent (in memory only) and how they join
a function's environment (docs/secrets.md).

The private key is `node-key` in the node's data directory (0600, made at first start, never
replaced); the data directory is off limits to functions in either isolation mode. Values are
opened from the sealed box that came with the signed state and kept in this process's memory;
on disk there is only the sealed box (in applied.json, `sealed_secrets`), which needs the key to
open, so a node restarted while the origin is away still gives its functions their secrets.
"""

from __future__ import annotations

from pathlib import Path

from edge.control.messages import FunctionState, SealedSecrets
from edge.control.sealing import NodeKey, open_secrets

__all__ = ["KEY_FILE", "MissingSecrets", "NodeSecrets"]

KEY_FILE = "node-key"

Values = dict[str, dict[str, str]]


class MissingSecrets(Exception):
    """A function's secrets that this node was not sent (or cannot open); it is not switched to."""


class NodeSecrets:
    """This node's key and the secrets it holds for its functions."""

    def __init__(self, data: Path) -> None:
        self.key = NodeKey.load_or_create(data / KEY_FILE)
        # Function name -> key -> value, as last opened; never written anywhere in the clear.
        self.values: Values = {}
        # The sealed box the values came from (what applied.json keeps).
        self.sealed: SealedSecrets | None = None

    def open(
        self, sealed: SealedSecrets | None, pinned_key: str, revision: int, node_id: str | None
    ) -> Values:
        """The values in `sealed` (none when None); raises SignatureError or SealError."""
        if sealed is None:
            return {}
        return open_secrets(sealed, self.key, pinned_key, revision, node_id).functions

    def take(self, sealed: SealedSecrets | None, values: Values) -> set[str]:
        """Hold `values` from now on; returns the functions whose secrets changed."""
        changed = {name for name in {*values, *self.values} if values.get(name) != self.values.get(name)}
        self.sealed, self.values = sealed, values
        return changed

    def of(self, function: FunctionState) -> dict[str, str]:
        """The secrets `function` runs with; raises MissingSecrets when one it has was not sent."""
        values = self.values.get(function.name, {})
        missing = [key for key in function.secrets if key not in values]
        if missing:
            raise MissingSecrets(
                f"its secrets {', '.join(missing)} did not reach this node (the origin seals them to the"
                " public key the node registered: see `edge secret ls` and the origin's log);"
                " it starts once they arrive"
            )
        return values

    def environment(self, function: FunctionState) -> tuple[tuple[str, str], ...]:
        """[env] and the secrets (a secret wins over an [env] key of the same name), sorted."""
        return tuple(sorted({**function.env, **self.of(function)}.items()))
