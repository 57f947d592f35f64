"""edge.toml decoding: defaults, and errors that name the file, the place and the bad value."""

from __future__ import annotations

from pathlib import Path

import pytest

from isolates.manifest import CachePolicy, Manifest, ManifestError, decode_manifest, load_manifest


def test_defaults_take_the_directory_name(tmp_path: Path) -> None:
    (tmp_path / "hello").mkdir()
    (tmp_path / "hello" / "edge.toml").write_text("")
    assert load_manifest(tmp_path / "hello") == Manifest(
        name="hello",
        entrypoint="main:handler",
        timeout_ms=30_000,
        env={},
        routes=[],
        cache=CachePolicy(ttl=0),
    )


def test_every_field_decodes() -> None:
    text = """
        name = "api"
        entrypoint = "app.web:make.handler"
        timeout_ms = 250
        routes = ["/v1/api", "/other"]
        [env]
        GREETING = "hi"
        [cache]
        ttl = 60
    """
    manifest = decode_manifest(text, "x/edge.toml", "x")
    assert (manifest.name, manifest.module, manifest.attribute) == ("api", "app.web", "make.handler")
    assert (manifest.timeout_ms, manifest.routes, manifest.env) == (
        250,
        ["/v1/api", "/other"],
        {"GREETING": "hi"},
    )
    assert manifest.cache.ttl == 60


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('timeout_ms = "fast"', "examples/hello/edge.toml: Expected `int`, got `str` - at `$.timeout_ms`"),
        ("colour = 1", "examples/hello/edge.toml: Object contains unknown field `colour`"),
        ("[env]\nPORT = 80", "examples/hello/edge.toml: Expected `str`, got `int` - at `$.env.PORT`"),
        ("routes = '/x'", "examples/hello/edge.toml: Expected `array`, got `str` - at `$.routes`"),
        (
            'entrypoint = "main"',
            "examples/hello/edge.toml: Expected `module:attribute`, got 'main' - at `$.entrypoint`",
        ),
        (
            "timeout_ms = 0",
            "examples/hello/edge.toml: Expected `int` from 1 to 900000, got 0 - at `$.timeout_ms`",
        ),
        (
            'name = "Hello World"',
            "examples/hello/edge.toml: Expected a name of 1-63 lowercase letters, digits, '-' or '_', "
            "got 'Hello World' - at `$.name`",
        ),
        (
            'routes = ["/ok", "/_edge/x"]',
            "examples/hello/edge.toml: Expected a path prefix starting with '/' (not under /_edge), "
            "got '/_edge/x' - at `$.routes[1]`",
        ),
        (
            '[env]\n"1BAD" = "x"',
            "examples/hello/edge.toml: Expected an environment variable name, got '1BAD' - at `$.env.1BAD`",
        ),
        ("[cache]\nttl = -1", "examples/hello/edge.toml: Expected `int` >= 0, got -1 - at `$.cache.ttl`"),
        ("timeout_ms = ", "examples/hello/edge.toml: Invalid value (at end of document)"),
        ('name = "x"\nname = "y"', "examples/hello/edge.toml: Cannot overwrite a value (at end of document)"),
    ],
)
def test_errors_name_file_place_and_value(text: str, message: str) -> None:
    with pytest.raises(ManifestError) as caught:
        decode_manifest(text, "examples/hello/edge.toml", "hello")
    assert str(caught.value) == message


def test_missing_manifest_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(ManifestError) as caught:
        load_manifest(tmp_path / "nothing")
    assert (
        str(caught.value)
        == f"{tmp_path}/nothing/edge.toml: cannot read the manifest: No such file or directory"
    )
