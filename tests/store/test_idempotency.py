"""Idempotent appends: a retried event id returns the first result and writes nothing."""

from __future__ import annotations

import pytest

from infrastructure.errors import EventIdReused
from infrastructure.event_store import ANY, NO_STREAM, EventStore, NewEvent
from tests.support import run_threads

from .conftest import table_state


def _events(*texts: str) -> list[NewEvent]:
    return [NewEvent("note.written", {"text": t}) for t in texts]


@pytest.mark.parametrize("expected", [NO_STREAM, ANY, 0])
def test_retry_returns_the_original_result(store: EventStore, fresh_database_url: str, expected) -> None:
    events = _events("a", "b")
    first = store.append("note-1", expected, events)
    store.append("note-1", 2, _events("c"))
    before = table_state(fresh_database_url)
    again = store.append("note-1", expected, events)
    assert again.duplicate and not first.duplicate
    assert (again.stream_id, again.version, again.positions) == (first.stream_id, first.version, first.positions)
    assert table_state(fresh_database_url) == before


@pytest.mark.parametrize(
    "change",
    [
        lambda e: NewEvent("note.written", {"text": "different"}, event_id=e.event_id),
        lambda e: NewEvent("note.tagged", {"tag": "x"}, event_id=e.event_id),
    ],
    ids=["payload", "type"],
)
def test_same_id_with_new_content_is_refused(store: EventStore, fresh_database_url: str, change) -> None:
    [event] = _events("a")
    store.append("note-1", NO_STREAM, [event])
    before = table_state(fresh_database_url)
    with pytest.raises(EventIdReused) as caught:
        store.append("note-1", ANY, [change(event)])
    assert str(event.event_id) in str(caught.value)
    with pytest.raises(EventIdReused):
        store.append("note-2", NO_STREAM, [event])  # same content, another stream
    with pytest.raises(EventIdReused):
        store.append("note-1", 1, [event, *_events("new")])  # a stored id mixed with a new one
    assert table_state(fresh_database_url) == before


@pytest.mark.parametrize("expected", [NO_STREAM, ANY])
def test_concurrent_identical_retries_write_once(store: EventStore, fresh_database_url: str, expected) -> None:
    events = _events("a", "b", "c")
    results = []
    run_threads([lambda: results.append(store.append("note-1", expected, events))] * 8)
    assert sum(not r.duplicate for r in results) == 1
    assert {(r.version, r.positions) for r in results} == {(3, results[0].positions)}
    state = table_state(fresh_database_url)
    assert [e["event_id"] for e in state["events"]] == [e.event_id for e in events]
    assert [(s["stream_id"], s["version"]) for s in state["streams"]] == [("note-1", 3)]


@pytest.mark.parametrize("expected", [NO_STREAM, ANY, 0])
def test_retry_inside_a_callers_transaction(store: EventStore, fresh_database_url: str, expected) -> None:
    events = _events("a")
    first = store.append("note-1", expected, events)
    with store.transaction() as conn:
        again = store.append_on(conn, "note-1", expected, events)
        # The caller's transaction goes on: the retry did not abort it.
        other = store.append_on(conn, "note-2", NO_STREAM, _events("b"))
    assert again.duplicate and again.positions == first.positions
    assert store.stream_version("note-2") == 1 and other.version == 1
    assert len(table_state(fresh_database_url)["events"]) == 2
