"""Other sessions' advisory locks, at any key, in any form: readers are never held back by them,
appends never wait for them, and no reader misses or repeats an event.

Chronicle's append locks live in a key space of their own (log_lock_key), and only sessions
that are appending to `events` count as blockers (schema/0009_reader_lock_space.sql).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from infrastructure.config import Settings
from infrastructure.db import connect
from infrastructure.event_store import ANY, NO_STREAM, EventStore, NewEvent
from tests.store.test_concurrency import run_threads
from tests.conftest import as_owner

# An append that waited on a lock would hit this (the old code waited for the whole timeout).
STATEMENT_TIMEOUT_MS = 5_000
PROMPT_SECONDS = 3.0


def note(text: str) -> NewEvent:
    return NewEvent("note.written", {"text": text})


def next_position(conn: psycopg.Connection) -> int:
    """The position the next append would take (what the append's lock is keyed at)."""
    return conn.execute(
        "SELECT CASE WHEN is_called THEN last_value + 1 ELSE last_value END AS p FROM events_position_seq"
    ).fetchone()["p"]


def tagged_key(conn: psycopg.Connection, position: int) -> int:
    return conn.execute("SELECT log_lock_key(%s) AS k", (position,)).fetchone()["k"]


@pytest.fixture
def store_settings() -> Settings:
    """As the store tests', with a statement timeout short enough that a waiting append fails fast."""
    return Settings(chronicle_pool_min_size=2, chronicle_pool_max_size=24,
                    chronicle_statement_timeout_ms=STATEMENT_TIMEOUT_MS)


@contextmanager
def foreign_session(url: str, settings: Settings) -> Iterator[psycopg.Connection]:
    """Another client of the same database: a migration tool, a job queue, a psql prompt."""
    conn = connect(url, settings)
    try:
        yield conn
    finally:
        conn.close()


def test_a_small_key_held_elsewhere_does_not_hold_readers_back(store: EventStore, fresh_database_url: str,
                                                              store_settings: Settings) -> None:
    """`SELECT pg_advisory_lock(1)` left idle in psql: the log moves on and reads see every event."""
    with foreign_session(fresh_database_url, store_settings) as psql:
        psql.execute("SELECT pg_advisory_lock(1)")
        psql.execute("SELECT pg_advisory_lock_shared(2)")
        psql.execute("SELECT pg_advisory_lock(1, 1)")
        first = store.append("note-1", NO_STREAM, [note("a"), note("b")])
        last = store.append("note-2", NO_STREAM, [note("c")])
        assert store.safe_position() == store.head() == last.position
        assert [e.position for e in store.read_all()] == [*first.positions, last.position]
        assert store.blockers() == []
        assert store.wait_for_events(first.position, 5) is True


@pytest.mark.parametrize("which", ["the old key of the next position", "the next tagged key",
                                   "the next tagged key, in a transaction"])
def test_an_exclusive_lock_on_the_next_key_does_not_block_appends(store: EventStore, fresh_database_url: str,
                                                                  store_settings: Settings, which: str) -> None:
    """A foreign exclusive lock exactly where the next append's lock goes: it appends at once."""
    for i in range(4):
        store.append(f"note-{i}", NO_STREAM, [note("before")])
    with foreign_session(fresh_database_url, store_settings) as other:
        position = next_position(other)
        assert position == 5
        key = position if which == "the old key of the next position" else tagged_key(other, position)
        if which.endswith("in a transaction"):
            other.autocommit = False
            other.execute("SELECT pg_advisory_xact_lock(%s)", (key,))
        else:
            other.execute("SELECT pg_advisory_lock(%s)", (key,))
        for attempt in range(3):  # every retry too, not only the first
            started = time.monotonic()
            result = store.append("note-held", ANY, [note(f"during {attempt}")])
            assert time.monotonic() - started < PROMPT_SECONDS
            # Under a foreign lock on its key, the append leaves a hole there and takes the next.
            assert result.position == position + attempt + (0 if which.startswith("the old") else 1)
        assert store.safe_position() == store.head() == result.position
        assert [e.payload["text"] for e in store.read_all(4)] == ["during 0", "during 1", "during 2"]


def test_a_session_waiting_for_the_next_key_does_not_block_appends(store: EventStore, fresh_database_url: str,
                                                                  store_settings: Settings) -> None:
    """A foreign session queued for the key an open append holds: later appends do not queue behind it."""
    store.append("note-0", NO_STREAM, [note("before")])
    with connect(fresh_database_url, store_settings, autocommit=False) as held, \
            foreign_session(fresh_database_url, store_settings) as other:
        key = tagged_key(other, next_position(other))
        open_append = store.append_on(held, "note-1", NO_STREAM, [note("held open")])
        waiter = threading.Thread(target=lambda: other.execute("SELECT pg_advisory_lock(%s)", (key,)))
        waiter.start()
        try:
            time.sleep(0.2)  # the foreign session now waits for the key, exclusively
            started = time.monotonic()
            later = store.append("note-2", NO_STREAM, [note("after")])
            assert time.monotonic() - started < PROMPT_SECONDS
            assert store.safe_position() == open_append.position - 1  # the open append still counts
        finally:
            held.commit()
            waiter.join(10)
        assert not waiter.is_alive()
        assert store.safe_position() == store.head() == later.position


def test_an_open_append_still_holds_readers_back_among_foreign_locks(store: EventStore, fresh_database_url: str,
                                                                    store_settings: Settings) -> None:
    """Foreign locks below and at the open append's key change nothing: it alone is the blocker."""
    store.append("note-0", NO_STREAM, [note("before")])
    with connect(fresh_database_url, store_settings, autocommit=False) as held, \
            foreign_session(fresh_database_url, store_settings) as other:
        other.execute("SELECT pg_advisory_lock_shared(log_lock_key(1)), pg_advisory_lock(1)")
        result = store.append_on(held, "note-1", NO_STREAM, [note("held")])
        other.execute("SELECT pg_advisory_lock_shared(log_lock_key(%s))", (result.position,))
        later = store.append("note-2", NO_STREAM, [note("after")])
        [blocker] = store.blockers()
        assert (blocker.pid, blocker.held_position) == (held.info.backend_pid, result.position)
        assert store.safe_position() == result.position - 1
        assert [e.payload["text"] for e in store.read_all()] == ["before"]
        held.commit()
    assert [e.position for e in store.read_all()][-2:] == [result.position, later.position]


@pytest.mark.parametrize("start", [2**32 - 2, 2**47])
def test_positions_past_32_bits_are_held_and_reported(store: EventStore, fresh_database_url: str,
                                                      store_settings: Settings, start: int) -> None:
    """The key carries 48 bits of position; pg_locks shows it split in two 32-bit halves."""
    with connect(as_owner(fresh_database_url), store_settings) as owner:  # the app login may not setval
        owner.execute("SELECT setval('events_position_seq', %s)", (start,))
        owner.execute("SELECT ensure_log_segments()")  # as the workers' tick would: a segment for them
    with connect(fresh_database_url, store_settings, autocommit=False) as held:
        open_append = store.append_on(held, "note-1", NO_STREAM, [note("held"), note("held too")])
        later = store.append("note-2", NO_STREAM, [note("after")])
        assert open_append.positions == (start + 1, start + 2)
        [blocker] = store.blockers()
        assert blocker.held_position == start + 1
        assert store.safe_position() == start
        held.commit()
    assert store.safe_position() == store.head() == later.position


# -- the property: many foreign locks, several writers and readers -----------------------------


@dataclass(frozen=True)
class ForeignLock:
    """One advisory lock another session takes: its key's form, level and mode."""

    form: str  # "tagged" (at next position + offset), "small" (a bigint key), "two-int"
    value: int  # the offset from the next position, or the small key
    level: str  # "session" or "xact"
    mode: str  # "shared" or "exclusive"

    def sql(self, next_pos: int) -> tuple[str, tuple[int, ...]]:
        shared = "_shared" if self.mode == "shared" else ""
        level = "_xact" if self.level == "xact" else ""
        function = f"pg_try_advisory{level}_lock{shared}"  # try: foreign sessions must not queue
        if self.form == "tagged":
            return f"SELECT {function}(log_lock_key(%s))", (max(next_pos + self.value, 1),)
        if self.form == "small":
            return f"SELECT {function}(%s::bigint)", (self.value,)
        # The two-int form of a tagged key's halves: the same numbers, objsubid 2.
        return (f"SELECT {function}((log_lock_key(%s) >> 32)::int, (log_lock_key(%s) & 2147483647)::int)",
                (max(next_pos + self.value, 1),) * 2)


locks = st.builds(
    ForeignLock,
    form=st.sampled_from(["tagged", "small", "two-int"]),
    value=st.integers(-3, 12),
    level=st.sampled_from(["session", "xact"]),
    mode=st.sampled_from(["shared", "exclusive"]),
)
WRITERS, APPENDS_PER_WRITER, READERS = 4, 8, 2


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(held=st.lists(st.lists(locks, min_size=1, max_size=8), min_size=1, max_size=3))
def test_no_foreign_lock_stalls_a_reader_or_makes_one_miss_an_event(store: EventStore, fresh_database_url: str,
                                                                   store_settings: Settings,
                                                                   held: list[list[ForeignLock]]) -> None:
    start = store.head()
    sessions = [connect(fresh_database_url, store_settings, autocommit=False) for _ in held]
    try:
        for conn, session_locks in zip(sessions, held):
            next_pos = next_position(conn)
            for lock in session_locks:
                conn.execute(*lock.sql(next_pos))
        appended: list[int] = []
        seen: list[list[int]] = [[] for _ in range(READERS)]
        writing = [WRITERS]
        guard = threading.Lock()

        def writer(index: int) -> None:
            try:
                for i in range(APPENDS_PER_WRITER):
                    events = [note(f"{index}.{i}.{k}") for k in range(1 + (index + i) % 3)]
                    started = time.monotonic()
                    result = store.append(f"w{index}-{i % 3}", ANY, events)
                    assert time.monotonic() - started < PROMPT_SECONDS, "an append waited on a foreign lock"
                    with guard:
                        appended.extend(result.positions)
            finally:
                with guard:
                    writing[0] -= 1

        def reader(index: int) -> None:
            checkpoint, deadline = start, None
            while True:
                batch = store.read_all(checkpoint, 5)
                seen[index].extend(e.position for e in batch)
                if batch:
                    checkpoint = batch[-1].position
                    continue
                with guard:
                    final, writers_left = max(appended, default=start), writing[0]
                if not writers_left:
                    if checkpoint >= final:
                        return
                    deadline = deadline or time.monotonic() + 10
                    assert time.monotonic() < deadline, f"reader stalled at {checkpoint}, head {final}"
                time.sleep(0.005)

        run_threads([lambda i=i: writer(i) for i in range(WRITERS)]
                    + [lambda i=i: reader(i) for i in range(READERS)])
        assert store.safe_position() >= store.head() == max(appended)
        for positions in seen:
            assert positions == sorted(appended)  # every event once, in order
    finally:
        for conn in sessions:
            conn.close()
