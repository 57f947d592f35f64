"""Benchmarks and load scenarios; `_servers` is shared with the tests."""
