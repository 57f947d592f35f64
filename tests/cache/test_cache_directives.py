"""The header parsers behind the policy."""

from __future__ import annotations

import pytest

from cache._directives import (
    MAX_DELTA,
    delta_seconds,
    entity_tags,
    http_date,
    opaque_tag,
    parse_cache_control,
    parse_tags,
    parse_vary,
    vary_values,
)


def test_cache_control_names_are_lowercased_quotes_removed_and_the_first_occurrence_wins() -> None:
    parsed = parse_cache_control(
        b'Max-Age=60, private="set-cookie, x-user", max-age=5,no-cache , s-maxage = "7"'
    )
    assert parsed == {"max-age": "60", "private": "set-cookie, x-user", "no-cache": None, "s-maxage": "7"}


@pytest.mark.parametrize(
    ("argument", "seconds"),
    [("0", 0), ("60", 60), ("99999999999", MAX_DELTA), ("-1", None), ("1.5", None), ("", None), (None, None)],
)
def test_delta_seconds(argument: str | None, seconds: int | None) -> None:
    assert delta_seconds(argument) == seconds


@pytest.mark.parametrize(
    "value",
    [b"Sun, 06 Nov 1994 08:49:37 GMT", b"Sunday, 06-Nov-94 08:49:37 GMT", b"Sun Nov  6 08:49:37 1994"],
)
def test_http_dates_in_all_three_formats(value: bytes) -> None:
    assert http_date(value) == 784111777.0


def test_an_invalid_http_date_is_none() -> None:
    assert http_date(b"0") is None


def test_entity_tags_compare_weakly() -> None:
    assert opaque_tag(b'W/"abc"') == opaque_tag(b'"abc"') == b"abc"
    assert entity_tags(b'"a", W/"b,c" ,"d"') == {b"a", b"b,c", b"d"}


def test_vary_names_are_sorted_lowercase_and_star_is_none() -> None:
    assert parse_vary([b"Accept-Language, accept-encoding", b"Accept-Language"]) == (
        b"accept-encoding",
        b"accept-language",
    )
    assert parse_vary([b"accept, *"]) is None
    assert parse_vary([]) == ()


def test_vary_values_join_repeated_fields_and_mark_missing_ones_empty() -> None:
    headers = [(b"accept", b" a "), (b"accept", b"b"), (b"x", b"y")]
    assert vary_values((b"accept", b"cookie"), headers) == (b"a,b", b"")


def test_tags_split_on_commas_and_spaces_without_duplicates() -> None:
    assert parse_tags([b"a, b  c,,d", b"a e"]) == ("a", "b", "c", "d", "e")
