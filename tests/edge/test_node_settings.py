"""Node settings: config/node.toml is the defaults, EDGE_* variables, flags, and exact error text."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import msgspec
import pytest

from cache import CacheSettings
from edge.node.settings import (
    BudgetSettings,
    NodeSettings,
    ScaleSettings,
    SettingsError,
    load_settings,
    read_token_file,
)

CONFIG = Path(__file__).resolve().parents[2] / "config" / "node.toml"


def with_changes(**changes: Any) -> NodeSettings:
    return msgspec.structs.replace(NodeSettings(), **changes)


def test_node_toml_decodes_to_exactly_the_defaults() -> None:
    assert msgspec.toml.decode(CONFIG.read_bytes(), type=NodeSettings) == NodeSettings()
    assert load_settings(CONFIG) == NodeSettings()


def field_names(struct: type[msgspec.Struct]) -> dict[str, Any]:
    """Every field of a settings struct; a nested struct (a TOML table) maps to its own fields."""
    names: dict[str, Any] = {}
    for field in msgspec.structs.fields(struct):
        nested = isinstance(field.type, type) and issubclass(field.type, msgspec.Struct)
        names[field.name] = field_names(field.type) if nested else None
    return names


def keys_of(table: dict[str, Any]) -> dict[str, Any]:
    return {
        key: keys_of(value) if isinstance(value, dict) and value else None for key, value in table.items()
    }


def test_node_toml_shows_every_field_with_a_comment() -> None:
    # Decoding to the defaults proves nothing about a field the file leaves out: list them all.
    text = CONFIG.read_text()
    assert keys_of(tomllib.loads(text)) == field_names(NodeSettings)
    lines = text.splitlines()
    for index, line in enumerate(lines):
        if line and not line.startswith("#"):
            assert lines[index - 1].startswith("# "), f"no comment line above {line!r}"


def test_no_layers_give_the_defaults() -> None:
    assert load_settings() == NodeSettings()
    assert load_settings(None, {}, {}) == NodeSettings()


@pytest.mark.parametrize(
    ("variable", "raw", "field", "value"),
    [
        ("EDGE_HOST", "0.0.0.0", "host", "0.0.0.0"),
        ("EDGE_PORT", "9000", "port", 9000),
        ("EDGE_WORKERS", "2", "workers", 2),
        ("EDGE_HTTP", "auto", "http", "auto"),
        ("EDGE_FUNCTIONS", "/srv/functions", "functions", "/srv/functions"),
        ("EDGE_MAX_BODY_BYTES", "1000", "max_body_bytes", 1000),
        ("EDGE_PRELOAD", "false", "preload", False),
        ("EDGE_PRELOAD", "0", "preload", False),
        ("EDGE_WARM_POOL", "0", "warm_pool", 0),
        ("EDGE_WARM_IMPORTS", "json,re", "warm_imports", ["json", "re"]),
        ("EDGE_LOG_LEVEL", "debug", "log_level", "debug"),
        ("EDGE_ABANDON_AFTER_MS", "200", "abandon_after_ms", 200),
        ("EDGE_SHUTDOWN_TIMEOUT_MS", "100", "shutdown_timeout_ms", 100),
        ("EDGE_POLL_TIMEOUT_S", "2.5", "poll_timeout_s", 2.5),
        ("EDGE_SCRUB_ENV", "A*,*B", "scrub_env", ["A*", "*B"]),
        ("EDGE_LABELS", "region=eu,tier=1", "labels", {"region": "eu", "tier": "1"}),
        ("EDGE_CACHE__ENABLED", "false", "cache", CacheSettings(enabled=False)),
        ("EDGE_CACHE__MAX_OBJECT_BYTES", "10", "cache", CacheSettings(max_object_bytes=10)),
        ("EDGE_SCALE__MIN_INSTANCES", "0", "scale", ScaleSettings(min_instances=0)),
        ("EDGE_SCALE__IDLE_TIMEOUT_S", "1.5", "scale", ScaleSettings(idle_timeout_s=1.5)),
        ("EDGE_BUDGET__MEMORY_BUDGET_MB", "512", "budget", BudgetSettings(memory_budget_mb=512)),
    ],
)
def test_an_edge_variable_overrides_its_field(variable: str, raw: str, field: str, value: Any) -> None:
    assert load_settings(None, {variable: raw}) == with_changes(**{field: value})


@pytest.mark.parametrize("variable", ["EDGE_WARM_IMPORTS", "EDGE_SCRUB_ENV"])
def test_an_empty_list_variable_is_an_empty_list(variable: str) -> None:
    # "EDGE_WARM_IMPORTS=" means "import nothing ahead": [""] would make every isolate import "".
    field = variable.removeprefix("EDGE_").lower()
    assert getattr(load_settings(None, {variable: ""}), field) == []


def test_other_variables_are_ignored() -> None:
    environ = {"PORT": "1", "EDGE_PORTS": "2", "edge_port": "3", "EDGE_CONFIG": "x.toml", "HOME": "/root"}
    assert load_settings(None, environ) == NodeSettings()


def test_layers_apply_in_order_file_then_environment_then_flags(tmp_path: Path) -> None:
    file = tmp_path / "node.toml"
    file.write_text('host = "10.0.0.1"\nport = 1234\nworkers = 3\nlog_level = "warning"\n')
    environ = {"EDGE_PORT": "9000", "EDGE_HOST": "0.0.0.0"}
    assert load_settings(file) == with_changes(host="10.0.0.1", port=1234, workers=3, log_level="warning")
    assert load_settings(file, environ) == with_changes(
        host="0.0.0.0", port=9000, workers=3, log_level="warning"
    )
    flags = {"host": "127.0.0.2", "port": 7000, "workers": None, "functions": None}
    assert load_settings(file, environ, flags) == with_changes(
        host="127.0.0.2", port=7000, workers=3, log_level="warning"
    )


def test_a_cache_variable_overrides_one_key_of_the_files_cache_table(tmp_path: Path) -> None:
    file = tmp_path / "node.toml"
    file.write_text("[cache]\nmax_bytes = 5000000\nmax_object_bytes = 1000\n")
    assert load_settings(file).cache == CacheSettings(max_bytes=5_000_000, max_object_bytes=1000)
    environ = {"EDGE_CACHE__ENABLED": "false", "EDGE_CACHE__MAX_BYTES": "6000000"}
    expected = CacheSettings(enabled=False, max_bytes=6_000_000, max_object_bytes=1000)
    assert load_settings(file, environ).cache == expected


def test_a_flag_left_unset_keeps_the_environment_value() -> None:
    assert load_settings(None, {"EDGE_PORT": "9000"}, {"port": None}).port == 9000
    assert load_settings(None, {"EDGE_PORT": "9000"}, {"port": 7000}).port == 7000


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('port = "x"', "Expected `int`, got `str` - at `$.port`"),
        ("port = 70000", "Expected `int` from 0 to 65535, got 70000 - at `$.port`"),
        (
            'log_level = "loud"',
            "Expected one of critical, error, warning, info, debug, got 'loud' - at `$.log_level`",
        ),
        ('http = "3"', "Expected one of 1, 2, auto, got '3' - at `$.http`"),
        ('interface = "wsgi"', "Expected one of rsgi, asgi, got 'wsgi' - at `$.interface`"),
        ("warm_pool = 65", "Expected `int` from 0 to 64, got 65 - at `$.warm_pool`"),
        ("abandon_after_ms = 0", "Expected `int` > 0, got 0 - at `$.abandon_after_ms`"),
        ("prot = 1", "Object contains unknown field `prot`"),
        ("warm_imports = 3", "Expected `array`, got `int` - at `$.warm_imports`"),
        ("[cache]\nmax_bytes = 0", "Expected an int >= 1, got 0 - at `$.cache.max_bytes`"),
        ("[scale]\nmax_instances = 0", "Expected a number from 1 to 64, got 0 - at `$.scale.max_instances`"),
        (
            "[scale]\nmin_instances = 5",
            "Expected `int` <= scale.max_instances (4), got 5 - at `$.scale.min_instances`",
        ),
        (
            "[budget]\nmax_instances = -1",
            "Expected `int` >= 0 (0: no ceiling), got -1 - at `$.budget.max_instances`",
        ),
        ("[scale]\nconcurency = 2", "Object contains unknown field `concurency` - at `$.scale`"),
    ],
)
def test_a_bad_file_value_names_the_file_the_field_and_the_value(
    tmp_path: Path, text: str, message: str
) -> None:
    file = tmp_path / "node.toml"
    file.write_text(text + "\n")
    with pytest.raises(SettingsError) as caught:
        load_settings(file, {"EDGE_PORT": "9000"}, {"port": 7000})
    assert str(caught.value) == f"{file}: {message}"


def test_a_missing_file_is_an_error(tmp_path: Path) -> None:
    file = tmp_path / "missing.toml"
    with pytest.raises(SettingsError) as caught:
        load_settings(file)
    assert str(caught.value) == f"{file}: cannot read the settings: No such file or directory"


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"EDGE_PORT": "abc"}, "environment variable EDGE_PORT='abc': Expected `int`, got `str`"),
        ({"EDGE_PRELOAD": "maybe"}, "environment variable EDGE_PRELOAD='maybe': Expected `bool`, got `str`"),
        ({"EDGE_PORT": "70000"}, "environment: Expected `int` from 0 to 65535, got 70000 - at `$.port`"),
        ({"EDGE_WORKERS": "0"}, "environment: Expected `int` from 1 to 256, got 0 - at `$.workers`"),
        ({"EDGE_HTTP": "3"}, "environment: Expected one of 1, 2, auto, got '3' - at `$.http`"),
        (
            {"EDGE_INTERFACE": "ASGI"},
            "environment: Expected one of rsgi, asgi, got 'ASGI' - at `$.interface`",
        ),
        (
            {"EDGE_POLL_TIMEOUT_S": "0.5"},
            "environment: Expected a number from 1 to 60, got 0.5 - at `$.poll_timeout_s`",
        ),
        (
            {"EDGE_CACHE__MAX_BYTES": "1000"},
            "environment: Expected at most max_bytes (1000), got 1048576 - at `$.cache.max_object_bytes`",
        ),
        (
            {"EDGE_CACHE__MAX_BYTES": "x"},
            "environment variable EDGE_CACHE__MAX_BYTES='x': Expected `int`, got `str`",
        ),
        (
            {"EDGE_MAX_BODY_BYTES": "-1"},
            "environment: Expected `int` >= 0, got -1 - at `$.max_body_bytes`",
        ),
        (
            {"EDGE_SCALE__QUEUE_TIMEOUT_MS": "0"},
            "environment: Expected a number from 1 to 900000, got 0 - at `$.scale.queue_timeout_ms`",
        ),
        (
            {"EDGE_BUDGET__MEMORY_BUDGET_MB": "lots"},
            "environment variable EDGE_BUDGET__MEMORY_BUDGET_MB='lots': Expected `int`, got `str`",
        ),
    ],
)
def test_a_bad_environment_value_names_the_variable_and_the_value(
    environ: dict[str, str], message: str
) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(None, environ, {"port": 7000})
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"port": 70000}, "command line: Expected `int` from 0 to 65535, got 70000 - at `$.port`"),
        ({"workers": 0}, "command line: Expected `int` from 1 to 256, got 0 - at `$.workers`"),
        ({"port": -1}, "command line: Expected `int` from 0 to 65535, got -1 - at `$.port`"),
    ],
)
def test_a_bad_flag_value_is_blamed_on_the_command_line(flags: dict[str, Any], message: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(None, {"EDGE_PORT": "9000"}, flags)
    assert str(caught.value) == message


def test_a_later_layer_picks_the_token_source(tmp_path: Path) -> None:
    config = tmp_path / "node.toml"
    config.write_text('token_file = "/etc/edge/node-token"\n')
    assert (load_settings(config).token, load_settings(config).token_file) == ("", "/etc/edge/node-token")
    from_env = load_settings(config, {"EDGE_TOKEN": "t"})
    assert (from_env.token, from_env.token_file) == ("t", "")
    from_flag = load_settings(config, {"EDGE_TOKEN": "t"}, {"token_file": "/run/token"})
    assert (from_flag.token, from_flag.token_file) == ("", "/run/token")


def test_token_and_token_file_in_one_layer_are_an_error(tmp_path: Path) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(None, {"EDGE_TOKEN": "t", "EDGE_TOKEN_FILE": "/run/token"})
    assert str(caught.value) == (
        "environment: Expected either `token` or `token_file`, got both - at `$.token` and `$.token_file`"
    )


def test_the_token_is_read_from_its_file(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("abc123\n")
    settings = read_token_file(load_settings(None, {}, {"token_file": str(token_file)}))
    assert (settings.token, settings.token_file) == ("abc123", str(token_file))
    token_file.write_text("two words\n")
    with pytest.raises(SettingsError) as caught:
        read_token_file(settings)
    assert str(caught.value) == f"{token_file}: Expected one node token on one line, got 9 characters"
