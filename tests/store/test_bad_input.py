"""Bad appends get a clear error naming what is wrong, and leave the tables unchanged."""

from __future__ import annotations

import pytest

from infrastructure.errors import (
    ConcurrencyConflict,
    EventIdReused,
    InvalidAppend,
    InvalidEventPayload,
    StoreError,
    UnknownEventType,
)
from infrastructure.event_store import ANY, NO_STREAM, EventStore, NewEvent

from .conftest import table_state

INJECTIONS = [
    "x'; DROP TABLE events; --",
    "note-1' OR '1'='1",
    "Robert'); DELETE FROM streams;--",
    'a"; TRUNCATE events; --',
    "note-1; SELECT pg_sleep(10)",
    "$$; DROP TABLE streams; $$",
]


def note(text: str = "ok", **extra) -> NewEvent:
    return NewEvent("note.written", {"text": text, **extra})


@pytest.fixture
def seeded(store: EventStore) -> EventStore:
    """A store with one stream at version 2, so refusals have something to leave alone."""
    store.append("note-1", NO_STREAM, [note("a"), note("b")], {"actor_id": "u1", "actor_type": "user"})
    return store


CASES = {
    "unknown type": (lambda: ("note-1", 2, [NewEvent("note.deleted", {})], None), UnknownEventType, "type"),
    "invalid payload": (lambda: ("note-1", 2, [NewEvent("note.written", {"text": 5})], None),
                        InvalidEventPayload, "payload.text"),
    "missing field": (lambda: ("note-1", 2, [NewEvent("note.written", {})], None), InvalidEventPayload, "payload.text"),
    "invalid second event": (lambda: ("note-1", 2, [note(), NewEvent("note.tagged", {"tag": ""})], None),
                             InvalidEventPayload, "payload.tag"),
    "payload not an object": (lambda: ("note-1", 2, [NewEvent("note.written", ["x"])], None),
                              InvalidEventPayload, "payload"),
    "oversized payload": (lambda: ("note-1", 2, [note("x" * 1_100_000)], None), InvalidAppend, "events.0.payload"),
    "too many events": (lambda: ("note-1", 2, [note() for _ in range(1001)], None), InvalidAppend, "events"),
    "no events": (lambda: ("note-1", 2, [], None), InvalidAppend, "events"),
    "repeated event id": (lambda: ("note-1", 2, [note(), note()][:1] * 2, None), InvalidAppend, "events.event_id"),
    "event id not a uuid": (lambda: ("note-1", 2, [NewEvent("note.written", {"text": "a"}, event_id="abc")], None),
                            InvalidAppend, "events.0.event_id"),
    "negative expected version": (lambda: ("note-1", -1, [note()], None), InvalidAppend, "expected_version"),
    "string expected version": (lambda: ("note-1", "2", [note()], None), InvalidAppend, "expected_version"),
    "bool expected version": (lambda: ("note-1", True, [note()], None), InvalidAppend, "expected_version"),
    "false expected version": (lambda: ("note-9", False, [note()], None), InvalidAppend, "expected_version"),
    "float expected version": (lambda: ("note-9", 0.0, [note()], None), InvalidAppend, "expected_version"),
    "actor type not allowed": (lambda: ("note-1", 2, [note()], {"actor_type": "robot"}),
                               InvalidAppend, "metadata.actor_type"),
    "metadata too large": (lambda: ("note-1", 2, [note()], {"note": "x" * 70_000}), InvalidAppend, "metadata"),
    "NUL in payload": (lambda: ("note-1", 2, [note("a\x00b")], None), InvalidAppend, "events.0.payload"),
    "NUL in metadata": (lambda: ("note-1", 2, [note()], {"actor_id": "u\x00"}), InvalidAppend, "metadata.actor_id"),
    "NUL in an extra metadata field": (lambda: ("note-1", 2, [note()], {"note": "u\x00"}), InvalidAppend, "metadata"),
    "session id too long for its index": (lambda: ("note-1", 2, [note()], {"session_id": "s" * 201}), InvalidAppend,
                                          "metadata.session_id"),
    "escaped backslash-u0000 text is fine but NUL after it is not": (
        lambda: ("note-1", 2, [note("\\u0000 \\\x00")], None), InvalidAppend, "events.0.payload"),
    "empty stream id": (lambda: ("", 2, [note()], None), InvalidAppend, "stream_id"),
    "long stream id": (lambda: ("n" * 201, NO_STREAM, [note()], None), InvalidAppend, "stream_id"),
    "stream id not a string": (lambda: (42, NO_STREAM, [note()], None), InvalidAppend, "stream_id"),
    "NUL in stream id": (lambda: ("note\x00", NO_STREAM, [note()], None), InvalidAppend, "stream_id"),
    **{f"injection {i}": (lambda s=s: (s, ANY, [note()], None), InvalidAppend, "stream_id")
       for i, s in enumerate(INJECTIONS)},
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_refused_and_nothing_written(seeded: EventStore, fresh_database_url: str, case: str) -> None:
    make, error, field = CASES[case]
    stream_id, expected, events, metadata = make()
    before = table_state(fresh_database_url)
    with pytest.raises(error) as caught:
        seeded.append(stream_id, expected, events, metadata)
    assert caught.value.field == field
    assert str(caught.value)
    assert table_state(fresh_database_url) == before


@pytest.mark.parametrize("expected, actual_expected", [(1, 1), (5, 5), (NO_STREAM, "no_stream")])
def test_wrong_expected_version(seeded: EventStore, fresh_database_url: str, expected, actual_expected) -> None:
    before = table_state(fresh_database_url)
    with pytest.raises(ConcurrencyConflict) as caught:
        seeded.append("note-1", expected, [note()])
    assert (caught.value.expected, caught.value.actual, caught.value.stream_id) == (actual_expected, 2, "note-1")
    with pytest.raises(ConcurrencyConflict) as caught:
        seeded.append("note-9", 3, [note()])
    assert caught.value.actual == 0
    assert table_state(fresh_database_url) == before
    # The version is checked before a position is taken: a conflict leaves no hole in the log.
    assert seeded.append("note-1", 2, [note()]).position == before["events"][-1]["position"] + 1


@pytest.mark.parametrize("expected", [ANY, 2])
def test_stream_of_another_type_is_refused(seeded: EventStore, fresh_database_url: str, expected) -> None:
    before = table_state(fresh_database_url)
    with pytest.raises(InvalidAppend) as caught:
        seeded.append("note-1", expected, [note(), note()], stream_type="document")
    assert caught.value.field == "stream_type"
    assert "note-1 is a note stream, not a document stream" in str(caught.value)
    assert table_state(fresh_database_url) == before


def test_reused_event_id_leaves_tables_unchanged(seeded: EventStore, fresh_database_url: str) -> None:
    stored = seeded.read_stream("note-1")[0]
    before = table_state(fresh_database_url)
    with pytest.raises(EventIdReused):
        seeded.append("note-1", 2, [NewEvent("note.written", {"text": "new"}, event_id=stored.event_id)])
    assert table_state(fresh_database_url) == before


def test_injection_strings_in_values_are_stored_verbatim(seeded: EventStore, fresh_database_url: str) -> None:
    """Strings that try SQL injection, where they are allowed, are only ever data."""
    events = [note(s) for s in INJECTIONS]
    metadata = {"actor_id": INJECTIONS[0], "actor_type": "agent", "session_id": INJECTIONS[2]}
    result = seeded.append("note-1", 2, events, metadata)
    stored = seeded.read_stream("note-1", 3)
    assert [e.payload["text"] for e in stored] == INJECTIONS
    assert stored[0].metadata["actor_id"] == INJECTIONS[0]
    assert result.version == 2 + len(INJECTIONS)
    state = table_state(fresh_database_url)
    assert len(state["events"]) == 2 + len(INJECTIONS) and len(state["streams"]) == 1


def test_every_refusal_is_a_store_or_event_type_error() -> None:
    """Callers can catch one family: each error class used above has a code and a field."""
    for error in (ConcurrencyConflict, EventIdReused, InvalidAppend):
        assert issubclass(error, StoreError) and error.code
    for error in (UnknownEventType, InvalidEventPayload):
        assert error.code
