"""Reads, stalls, wake-ups, upcasting, definitions and after-append listeners."""

from __future__ import annotations

import threading
import time
import uuid

import psycopg
import pytest
from pydantic import BaseModel

from domain.event_types import EventTypeRegistry
from infrastructure.config import Settings
from infrastructure.db import connect
from infrastructure.event_store import ANY, NO_STREAM, AppendResult, EventStore, NewEvent
from infrastructure.notifier import CHANNEL
from infrastructure.store_reads import SchemaChanged


def note(text: str) -> NewEvent:
    return NewEvent("note.written", {"text": text})


def test_read_stream_ranges_type_filter_and_head(store: EventStore) -> None:
    assert store.head() == 0 and store.read_all() == [] and store.read_stream("none") == []
    store.append("note-1", NO_STREAM, [note("a"), note("b"), note("c")], {"actor_id": "u1", "actor_type": "user"})
    last = store.append("note-2", NO_STREAM, [NewEvent("note.tagged", {"tag": "t"})])
    assert [e.payload["text"] for e in store.read_stream("note-1", 2)] == ["b", "c"]
    assert [e.version for e in store.read_stream("note-1", 1, 2)] == [1, 2]
    assert store.read_stream("note-1", 4) == []
    assert [e.type for e in store.read_all(types=["note.tagged"])] == ["note.tagged"]
    assert store.read_all(types=["note.unknown"]) == []
    assert store.head() == last.position == store.safe_position()
    first = store.read_all(0, 1)[0]
    assert first.metadata == {"actor_id": "u1", "actor_type": "user"} and first.stream_type == "note"


def test_blockers_report_the_session_holding_the_log_back(store: EventStore, fresh_database_url: str,
                                                          store_settings: Settings) -> None:
    store.append("note-0", NO_STREAM, [note("before")])
    with connect(fresh_database_url, store_settings, autocommit=False) as held:
        result = store.append_on(held, "note-1", NO_STREAM, [note("held")])
        later = store.append("note-2", NO_STREAM, [note("after")])
        [blocker] = store.blockers()
        assert blocker.pid == held.info.backend_pid
        assert blocker.held_position == result.position
        assert blocker.state == "idle in transaction"
        assert store.safe_position() == result.position - 1
        assert [e.payload["text"] for e in store.read_all()] == ["before"]
        held.commit()
    assert store.blockers() == []
    assert [e.position for e in store.read_all()][-2:] == [result.position, later.position]


def test_an_idle_append_transaction_is_ended_and_readers_progress(store: EventStore, fresh_database_url: str) -> None:
    short = Settings(chronicle_idle_in_transaction_timeout_ms=300, chronicle_statement_timeout_ms=5_000)
    idle = connect(fresh_database_url, short, autocommit=False)
    try:
        stalled = store.append_on(idle, "note-1", NO_STREAM, [note("abandoned")])
        later = store.append("note-2", NO_STREAM, [note("after")])
        assert store.read_all() == []
        # PostgreSQL ends the idle session; poll (bounded) until the log moves on.
        deadline = time.monotonic() + 30
        while store.blockers() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert store.blockers() == []
        assert [e.position for e in store.read_all()] == [later.position]
        assert store.read_stream("note-1") == [] and store.stream_version("note-1") == 0
        assert stalled.position < later.position
        with pytest.raises((psycopg.errors.IdleInTransactionSessionTimeout, psycopg.OperationalError)):
            idle.execute("SELECT 1")
    finally:
        idle.close()


def test_wait_for_events(store: EventStore) -> None:
    head = store.head()
    assert store.wait_for_events(head, 0.3) is False

    def later() -> None:
        time.sleep(0.3)
        store.append("note-1", NO_STREAM, [note("wake")])

    thread = threading.Thread(target=later)
    thread.start()
    try:
        assert store.wait_for_events(head, 30) is True
    finally:
        thread.join()
    assert store.head() > head


@pytest.mark.parametrize("in_transaction", [False, True])
def test_a_committed_append_sends_notify(store: EventStore, fresh_database_url: str,
                                         store_settings: Settings, in_transaction: bool) -> None:
    with connect(fresh_database_url, store_settings) as listener:
        listener.execute(f"LISTEN {CHANNEL}")
        if in_transaction:
            with store.transaction() as conn:
                result = store.append_on(conn, "note-1", NO_STREAM, [note("a")], log_name="other-log")
                assert list(listener.notifies(timeout=0.2, stop_after=1)) == []  # not before the commit
            store.committed([result], "other-log")
        else:
            store.append("note-1", NO_STREAM, [note("a")], log_name="other-log")
        got = list(listener.notifies(timeout=20, stop_after=1))
    assert [(n.channel, n.payload) for n in got] == [(CHANNEL, "other-log")]


def test_old_schema_versions_are_upcast_when_read(store: EventStore, fresh_pool) -> None:
    stored = store.append("note-1", NO_STREAM, [note("hello")])
    newer = EventTypeRegistry()

    @newer.register("note.written", schema_version=2)
    class NoteWrittenV2(BaseModel):
        text: str
        language: str

    @newer.upcaster("note.written", 1)
    def add_language(payload: dict) -> dict:
        return {**payload, "language": "en"}

    store_v2 = EventStore(fresh_pool, newer, store.settings)
    [event] = store_v2.read_stream("note-1")
    assert (event.schema_version, event.payload) == (2, {"text": "hello", "n": 0, "language": "en"})
    assert store_v2.read_all()[0].payload["language"] == "en"
    written = store_v2.append("note-1", 1, [NewEvent("note.written", {"text": "hi", "language": "fr"})])
    with fresh_pool.connection() as conn:
        rows = conn.execute("SELECT schema_version FROM events ORDER BY position").fetchall()
    assert [r["schema_version"] for r in rows] == [1, 2] and written.position > stored.position
    # The old registry still reads its own version untouched.
    assert store.read_stream("note-1")[0].payload == {"text": "hello", "n": 0}


def test_register_definitions_writes_json_schemas(store: EventStore, fresh_pool) -> None:
    assert store.register_definitions() == 2
    assert store.register_definitions() == 2  # again: the same rows, untouched
    with fresh_pool.connection() as conn:
        rows = conn.execute("SELECT * FROM event_definitions ORDER BY type").fetchall()
    assert [(r["type"], r["schema_version"], r["stream_type"]) for r in rows] == [
        ("note.tagged", 1, "note"), ("note.written", 1, "note")]
    written = rows[1]["json_schema"]
    # Defaults are filled in when stored, so every field is in every payload, and no other.
    assert written["properties"]["text"]["type"] == "string" and written["required"] == ["text", "n"]
    assert written["additionalProperties"] is False


def test_a_changed_payload_shape_never_overwrites_its_schema(store: EventStore, fresh_pool) -> None:
    store.register_definitions()
    changed = EventTypeRegistry()

    @changed.register("note.written")
    class NoteWritten(BaseModel):  # the same version, another shape
        text: str
        language: str = "en"

    with pytest.raises(SchemaChanged, match="note.written v1"):
        EventStore(fresh_pool, registry=changed).register_definitions()
    with fresh_pool.connection() as conn:
        row = conn.execute("SELECT json_schema FROM event_definitions WHERE type = 'note.written'").fetchone()
    assert set(row["json_schema"]["properties"]) == {"text", "n"}


def test_after_append_listeners(store: EventStore, caplog: pytest.LogCaptureFixture) -> None:
    calls: list[AppendResult] = []

    def broken(result: AppendResult) -> None:
        raise RuntimeError("listener is down")

    store.after_append.extend([broken, calls.append])
    first = store.append("note-1", NO_STREAM, [note("a")])
    events = [note("b"), note("c")]
    second = store.append("note-1", ANY, events)
    store.append("note-1", ANY, events)  # a retry: nothing committed, no call
    with pytest.raises(Exception):
        store.append("note-1", 1, [note("conflict")])
    assert calls == [first, second]
    assert len(store.read_stream("note-1")) == 3
    assert "listener is down" in caplog.text or "after-append listener" in caplog.text


def test_the_held_back_start_is_known_to_a_session_of_another_role(store: EventStore, fresh_database_url: str,
                                                                   admin_url: str) -> None:
    """The API and a writer logged in as different roles: the API still sees since when the log is held.

    Without pg_read_all_stats another role's xact_start is hidden; log_status() then gives the
    time of the first event readers cannot see yet.
    """
    from psycopg import conninfo

    from infrastructure.log_status import read_log_status

    suffix = uuid.uuid4().hex[:8]
    roles = [f"chronicle_test_api_{suffix}", f"chronicle_test_writer_{suffix}"]
    with psycopg.connect(admin_url, autocommit=True) as admin:
        for role in roles:
            admin.execute(f"CREATE ROLE {role} LOGIN IN ROLE chronicle_app")
    api_url, writer_url = (conninfo.make_conninfo(fresh_database_url, user=role) for role in roles)
    try:
        with psycopg.connect(writer_url) as writer, psycopg.connect(api_url, autocommit=True) as api:
            store.append_on(writer, "note-1", NO_STREAM, [note("held")])
            assert read_log_status(api).held_back_since is None  # nothing committed above it yet
            later = store.append("note-2", NO_STREAM, [note("after")])
            log = read_log_status(api)
            assert (log.head, log.blockers) == (later.position, 1) and log.safe < later.position
            assert log.held_back_since is not None and 0 <= log.held_back_seconds < 60
            writer.rollback()
            assert read_log_status(api).held_back_since is None
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            for role in roles:
                admin.execute(f"DROP ROLE IF EXISTS {role}")
