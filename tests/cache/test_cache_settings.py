"""CacheSettings: defaults, and errors that name the bad value."""

from __future__ import annotations

import msgspec
import pytest

from cache import CacheSettings


def test_defaults() -> None:
    settings = CacheSettings()
    assert (settings.enabled, settings.max_bytes, settings.max_object_bytes) == (True, 64 << 20, 1 << 20)
    assert (settings.name, settings.heuristic_fraction, settings.heuristic_max_seconds) == (
        "edge",
        0.1,
        86_400,
    )


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"max_bytes": 0}, "Expected an int >= 1, got 0 - at `$.max_bytes`"),
        ({"max_object_bytes": -5}, "Expected an int >= 1, got -5 - at `$.max_object_bytes`"),
        (
            {"max_bytes": 100, "max_object_bytes": 200},
            "Expected at most max_bytes (100), got 200 - at `$.max_object_bytes`",
        ),
        ({"heuristic_fraction": 1.5}, "Expected a number from 0 to 1, got 1.5 - at `$.heuristic_fraction`"),
        ({"heuristic_fraction": -0.1}, "Expected a number from 0 to 1, got -0.1 - at `$.heuristic_fraction`"),
        ({"heuristic_max_seconds": -1}, "Expected an int >= 0, got -1 - at `$.heuristic_max_seconds`"),
    ],
)
def test_bad_sizes_are_refused(fields: dict[str, int], message: str) -> None:
    with pytest.raises(ValueError) as raised:
        CacheSettings(**fields)  # type: ignore[arg-type]
    assert str(raised.value) == message
    with pytest.raises(msgspec.ValidationError) as decoded:
        msgspec.convert(fields, CacheSettings)
    assert str(decoded.value) == message


def test_unknown_fields_are_refused() -> None:
    with pytest.raises(msgspec.ValidationError) as raised:
        msgspec.convert({"max_size": 1}, CacheSettings)
    assert str(raised.value) == "Object contains unknown field `max_size`"
