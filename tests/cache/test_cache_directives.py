"""The header parsers behind the policy."""

from __future__ import annotations

import time

import pytest
from cache_fakes import START as NOW

from cache._dates import http_date
from cache._directives import (
    MAX_DELTA,
    delta_seconds,
    entity_tags,
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
    """RFC 9110 §5.6.7: a recipient accepts IMF-fixdate, rfc850-date and asctime-date."""
    assert http_date(value, NOW) == 784111777.0


@pytest.mark.parametrize(
    ("value", "year"),
    [(b"Monday, 01-Jan-73 00:00:00 GMT", 2073), (b"Tuesday, 01-Jan-74 00:00:00 GMT", 1974)],
)
def test_an_rfc850_year_more_than_50_years_ahead_is_the_last_century(value: bytes, year: int) -> None:
    """RFC 9110 §5.6.7: a two-digit year over 50 years in the future means the most recent past one."""
    parsed = http_date(value, NOW)  # NOW is in 2023: 2073 is 50 years ahead, 2074 more
    assert parsed is not None and time.gmtime(parsed).tm_year == year


@pytest.mark.parametrize(
    "value",
    [
        b"0",
        b"Sun, 06 Nov 94 08:49:37 GMT",  # two-digit year in IMF-fixdate
        b"Sun, 06 Nov 1994 08:49:37 UTC",  # another zone name
        b"Sun, 06 Nov 1994 08:49:37 AEST",
        b"Sun, 06 Nov 1994 08:49:37 +0000",
        b"Sun 06 Nov 1994 08:49:37 GMT",  # no comma
        b"Sun,  06 Nov 1994 08:49:37 GMT",  # two spaces
        b"Sun, 06-Nov-1994 08:49:37 GMT",  # dashes in IMF-fixdate
        b"Sun, 06 Nov 1994 08.49.37 GMT",  # periods
        b"Sun, 06 Nov 1994 8:49:37 GMT",  # one-digit hour
        b"sun, 06 nov 1994 08:49:37 gmt",  # day and month names are case-sensitive
        b"Sun, 31 Nov 1994 08:49:37 GMT",  # no such day
        b"Sun, 06 Nov 1994 24:00:00 GMT",
        b"Sun, 06 Nov 1994 08:49:37 GMT, Mon, 07 Nov 1994 08:49:37 GMT",  # a list
    ],
)
def test_anything_but_the_three_formats_is_not_a_date(value: bytes) -> None:
    assert http_date(value, NOW) is None


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


@pytest.mark.parametrize(
    ("name", "values", "normalised"),
    [
        (b"accept-encoding", [b"gzip, BR"], b"gzip,br"),
        (b"accept-encoding", [b"GZip ;q=1.0 ,  br"], b"gzip;q=1.0,br"),
        (b"accept-encoding", [b"gzip", b"br"], b"gzip,br"),
        (b"accept-language", [b"de-CH, en;q=0.5"], b"de-ch,en;q=0.5"),
        (b"x-tenant", [b" Alpha ,  Beta "], b"Alpha,Beta"),  # case kept: the field's own semantics
    ],
)
def test_vary_values_are_normalised(name: bytes, values: list[bytes], normalised: bytes) -> None:
    """RFC 9111 §4.1: whitespace, list joins, and case where the field is case-insensitive."""
    assert vary_values((name,), [(name, value) for value in values]) == (normalised,)


def test_tags_split_on_commas_and_spaces_without_duplicates() -> None:
    assert parse_tags([b"a, b  c,,d", b"a e"]) == ("a", "b", "c", "d", "e")
