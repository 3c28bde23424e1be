"""Group commit: concurrent one-event appends written together, each with the answer it would get alone."""

from __future__ import annotations

import threading
import uuid
from typing import Annotated

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg_pool import ConnectionPool
from pydantic import BaseModel, Field

from domain.personal import PERSONAL
from infrastructure.append_groups import ALONE, REFUSED, AppendGroups, _Waiting
from infrastructure.config import Settings
from infrastructure.errors import ConcurrencyConflict, EventIdReused
from infrastructure.event_store import NO_STREAM, EventStore, NewEvent
from infrastructure.log_verify import verify_log
from tests.conftest import as_app
from tests.store.conftest import note_registry, table_state
from tests.support import run_threads

WRITERS = 8

# A writer's step: a new stream, the next event of its stream, an append at a version the stream
# has left behind, or its last append sent again with the same event id.
STEPS = st.sampled_from(["new", "next", "stale", "again"])


def _params(store: EventStore, stream: str, expected, event: NewEvent) -> tuple:
    """The parameters append_event takes for one append (what a group is made of)."""
    return store._prepare(None, stream, expected, [event], None, None, "chronicle").params


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(plans=st.lists(st.lists(STEPS, min_size=4, max_size=14), min_size=WRITERS, max_size=WRITERS))
def test_writers_at_once_get_what_each_would_get_alone(store: EventStore, plans: list[list[str]]) -> None:
    """Eight threads at once: every append returns where it landed, a stale one a conflict, a
    retry the first result; the log holds exactly the appends that were answered as written."""
    run = uuid.uuid4().hex[:8]
    barrier = threading.Barrier(WRITERS)
    written: list[tuple[str, int, uuid.UUID, int]] = []
    lock = threading.Lock()

    def writer(index: int) -> None:
        stream, version, last = None, 0, None
        barrier.wait()
        for n, step in enumerate(plans[index]):
            if step == "new" or stream is None:
                stream, version, last = f"{run}-w{index}-{n}", 0, None
            if step == "again" and last is not None:
                event, expected = last
                retried = store.append(stream, expected or NO_STREAM, [event])
                assert retried.duplicate and retried.version == expected + 1
                continue
            if step == "stale" and version > 0:
                with pytest.raises(ConcurrencyConflict) as conflict:
                    store.append(stream, version - 1 or NO_STREAM, [NewEvent("note.written", {"text": "late"})])
                assert conflict.value.actual == version
                continue
            event = NewEvent("note.written", {"text": f"{index}-{n}", "n": n})
            result = store.append(stream, version or NO_STREAM, [event])
            assert (result.stream_id, result.version, result.duplicate) == (stream, version + 1, False)
            with lock:
                written.append((stream, result.version, event.event_id, result.position))
            last, version = (event, version), version + 1

    run_threads([lambda i=i: writer(i) for i in range(WRITERS)])

    with psycopg.connect(store.pool.conninfo) as conn:
        stored = conn.execute("SELECT stream_id, version, event_id, position FROM events WHERE stream_id LIKE %s",
                              (f"{run}-%",)).fetchall()
    assert sorted(stored) == sorted(written)


def test_appends_at_the_same_moment_share_one_statement(store: EventStore) -> None:
    """Sixteen threads released together: some appends are written in groups, and each stream's
    hash chain runs on unbroken through them."""
    barrier = threading.Barrier(16)

    def writer(index: int) -> None:
        for n in range(20):
            if n % 5 == 0:
                barrier.wait()
            store.append(f"together-{index}", n or NO_STREAM, [NewEvent("note.written", {"text": "x", "n": n})])

    run_threads([lambda i=i: writer(i) for i in range(16)])
    assert store.groups.groups_written > 0 and store.groups.largest > 1
    with psycopg.connect(store.pool.conninfo) as conn:
        report = verify_log(conn)
    assert report.ok and report.events == 16 * 20


def test_personal_appends_join_groups_under_their_cached_keys(
    fresh_pool: ConnectionPool, store_settings: Settings
) -> None:
    """Appends with a personal field are encrypted before they wait, so they share statements too:
    a stream's first asks for its subject's key alone, the rest use the key the process cached.
    Every value reads back as written, and the log holds only its ciphertext."""
    registry = note_registry()

    @registry.register("note.private")
    class NotePrivate(BaseModel):
        secret: Annotated[str | None, Field(**PERSONAL)] = None
        n: int = 0

    store = EventStore(fresh_pool, registry, store_settings)
    barrier = threading.Barrier(16)

    def writer(index: int) -> None:
        for n in range(12):
            if n % 4 == 0:
                barrier.wait()
            store.append(f"private-{index}", n or NO_STREAM,
                         [NewEvent("note.private", {"secret": f"secret {index}/{n}", "n": n})],
                         {"actor_id": f"user-{index % 3}", "actor_type": "user"})

    run_threads([lambda i=i: writer(i) for i in range(16)])
    assert store.groups.groups_written > 0 and store.groups.largest > 1
    for index in range(16):
        assert [e.payload["secret"] for e in store.read_stream(f"private-{index}")] == [
            f"secret {index}/{n}" for n in range(12)]
    with psycopg.connect(store.pool.conninfo) as conn:
        sealed = conn.execute("SELECT count(*) FILTER (WHERE payload->'secret'->>'cipher' = 'AES-256-GCM'),"
                              " count(*) FILTER (WHERE payload::text LIKE '%%secret %%') FROM events").fetchone()
        report = verify_log(conn)
    assert sealed == (16 * 12, 0)
    assert report.ok and report.events == 16 * 12


def test_a_group_writes_its_claims_and_refuses_a_stale_one(store: EventStore) -> None:
    """One statement: the appends at their streams' versions are written, the stale one is not."""
    store.append("s-1", NO_STREAM, [NewEvent("note.written", {"text": "a"})])
    group = [
        _Waiting(_params(store, "s-1", 1, NewEvent("note.written", {"text": "b"}))),
        _Waiting(_params(store, "s-2", NO_STREAM, NewEvent("note.written", {"text": "c"}))),
        _Waiting(_params(store, "s-1x", 3, NewEvent("note.written", {"text": "stale"}))),
    ]
    AppendGroups(store.pool, 64)._write(group)
    (p1, v1), (p2, v2) = group[0].outcome, group[1].outcome
    assert (v1, v2, group[2].outcome) == (2, 1, REFUSED)
    assert [e.position for e in store.read_stream("s-1")][-1] == p1 and p2 == p1 + 1
    assert store.stream_version("s-1x") == 0


def test_a_failing_group_writes_nothing_and_each_caller_appends_alone(
    store: EventStore, fresh_database_url: str
) -> None:
    """A reused event id fails the group's statement: nothing of it is written; through the store,
    the other appends are then written and the reuse is refused on its own."""
    first = NewEvent("note.written", {"text": "first"})
    store.append("kept", NO_STREAM, [first])
    reused = NewEvent("note.written", {"text": "other"}, event_id=first.event_id)
    events = [NewEvent("note.written", {"text": "b"}), NewEvent("note.written", {"text": "c"})]
    group = [_Waiting(_params(store, "g-1", NO_STREAM, events[0])),
             _Waiting(_params(store, "g-2", NO_STREAM, reused)),
             _Waiting(_params(store, "g-3", NO_STREAM, events[1]))]
    before = table_state(fresh_database_url)
    AppendGroups(store.pool, 64)._write(group)
    assert [w.outcome for w in group] == [ALONE, ALONE, ALONE]
    assert table_state(fresh_database_url) == before

    barrier = threading.Barrier(3)
    answers: dict[str, object] = {}

    def append(stream: str, event: NewEvent) -> None:
        barrier.wait()
        try:
            answers[stream] = store.append(stream, NO_STREAM, [event]).version
        except EventIdReused as exc:
            answers[stream] = exc

    run_threads([lambda: append("g-1", events[0]), lambda: append("g-2", reused), lambda: append("g-3", events[1])])
    assert answers["g-1"] == answers["g-3"] == 1 and isinstance(answers["g-2"], EventIdReused)
    assert store.stream_version("g-2") == 0


@pytest.mark.parametrize("streams, event_ids", [
    (["dup", "dup"], 2),  # a stream twice: its second event would not chain onto its first
    (["a", "b"], 1),  # arrays of different lengths
])
def test_the_application_login_cannot_misuse_append_batch(
    fresh_database_url: str, streams: list[str], event_ids: int
) -> None:
    """Called straight by the application login, a malformed group is refused and writes nothing."""
    before = table_state(fresh_database_url)
    with psycopg.connect(as_app(fresh_database_url)) as conn, pytest.raises(psycopg.errors.InvalidParameterValue):
        n = len(streams)
        conn.execute(
            "SELECT * FROM append_batch(%s, %s, %s, %s, %s::jsonb[], %s, %s, %s, %s, %s::jsonb[])",
            (["no_stream"] * n, streams, ["note"] * n, [0] * n, ["{}"] * n, ["chronicle"] * n,
             [uuid.uuid4() for _ in range(event_ids)], ["note.written"] * n, [1] * n, ['{"text": "x"}'] * n))
    assert table_state(fresh_database_url) == before
