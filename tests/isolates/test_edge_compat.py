"""The 3.13/3.14 compatibility layer over `_interpreters` and `_interpqueues`, called directly."""

from __future__ import annotations

from isolates.guest import GUEST_DIR
from isolates.guest._edge_compat import (
    call_exec,
    create_interpreter,
    destroy_interpreter,
    queue_count,
    queue_create,
    queue_destroy,
    queue_get,
    queue_put,
)


def test_exec_without_shared_values_and_with_an_uncaught_error() -> None:
    iid = create_interpreter()
    try:
        assert call_exec(iid, "x = 1") is None
        assert call_exec(iid, "assert x == 1 and y == b'z'", {"y": b"z"}) is None
        error = call_exec(iid, "raise ValueError('boom')")
        assert error is not None
        assert error.splitlines()[0] == "Traceback (most recent call last):"
        assert error.splitlines()[-1] == "ValueError: boom"
    finally:
        destroy_interpreter(iid)


def test_queue_round_trip_and_items_of_a_destroyed_interpreter_come_back_as_none() -> None:
    qid = queue_create()
    iid = create_interpreter()
    try:
        source = (
            f"import sys\nsys.path.insert(0, {str(GUEST_DIR)!r})\nimport _edge_compat\n"
            f"_edge_compat.queue_put({qid}, ((1, 'from guest'),))\n"
        )
        assert call_exec(iid, source) is None
        queue_put(qid, ((2, b"from host", memoryview(b"x")),))
    finally:
        destroy_interpreter(iid)
    try:
        assert queue_count(qid) == 2
        assert queue_get(qid) is None  # unbound: its interpreter is gone, the item stays as a marker
        batch = queue_get(qid)
        assert batch[0][:2] == (2, b"from host")
        assert bytes(batch[0][2]) == b"x"
        assert queue_count(qid) == 0
    finally:
        queue_destroy(qid)
