"""The router: whole-segment path prefixes, the longest one wins, `/` only as the fallback."""

from __future__ import annotations

import pytest

from edge.node.routing import Router

DEFAULTS = [("/hello", "hello"), ("/echo", "echo")]


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/hello", "hello"),
        ("/hello/", "hello"),
        ("/hello/x", "hello"),
        ("/hello/x/y.txt", "hello"),
        ("/echo/x", "echo"),
        ("/hellox", None),
        ("/hell", None),
        ("/Hello", None),
        ("/", None),
        ("/nope", None),
        ("/x/hello", None),
    ],
)
def test_a_function_serves_its_name_and_everything_under_it(path: str, expected: str | None) -> None:
    assert Router(DEFAULTS).match(path) == expected


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/api", "api"),
        ("/api/v1", "api"),
        ("/api/v2", "v2"),
        ("/api/v2/users", "v2"),
        ("/api/v2x", "api"),
        ("/api/v2/admin", "admin"),
        ("/api/v2/admin/x", "admin"),
        ("/api/v2/administrator", "v2"),
        ("/apix", None),
    ],
)
def test_the_longest_prefix_wins(path: str, expected: str | None) -> None:
    # Given shortest first and longest first: the order of the routes must not matter.
    routes = [("/api", "api"), ("/api/v2", "v2"), ("/api/v2/admin", "admin")]
    assert Router(routes).match(path) == expected
    assert Router(reversed(routes)).match(path) == expected


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/", "site"),
        ("/hello", "hello"),
        ("/hello/x", "hello"),
        ("/hellox", "site"),
        ("/index.html", "site"),
        ("/api/v2", "v2"),
        ("/api/v2/x", "v2"),
        ("/api/v3", "site"),
        ("/api", "site"),
    ],
)
def test_the_catch_all_is_only_the_fallback(path: str, expected: str) -> None:
    routes = [("/", "site"), *DEFAULTS, ("/api/v2", "v2")]
    assert Router(routes).match(path) == expected
    assert Router(reversed(routes)).match(path) == expected


@pytest.mark.parametrize(
    ("routes", "path", "expected"),
    [
        ([("/api/v2/", "v2")], "/api/v2", "v2"),
        ([("/api/v2/", "v2")], "/api/v2/", "v2"),
        ([("/api/v2/", "v2")], "/api/v2/x", "v2"),
        ([("/api/v2/", "v2")], "/api/v2x", None),
        ([("/docs/", "docs")], "/docs", "docs"),
        ([("/docs/", "docs")], "/docs/a", "docs"),
        ([("/docs/", "docs")], "/docsx", None),
    ],
)
def test_a_trailing_slash_in_a_route_prefix_is_ignored(
    routes: list[tuple[str, str]], path: str, expected: str | None
) -> None:
    assert Router(routes).match(path) == expected


def test_a_later_duplicate_prefix_wins() -> None:
    router = Router([("/a", "first"), ("/a/", "second"), ("/b/c", "x"), ("/b/c", "y")])
    assert router.match("/a/z") == "second"
    assert router.match("/b/c") == "y"


def test_an_empty_router_matches_nothing() -> None:
    assert Router(()).match("/") is None
    assert Router(()).match("/hello") is None
