"""Concurrent writers and readers: conflicts reported, nothing lost or duplicated, no skipped commit."""

from __future__ import annotations

import threading
import uuid
from collections import Counter

import psycopg

from infrastructure.errors import ConcurrencyConflict
from infrastructure.event_store import NO_STREAM, EventStore, NewEvent
from tests.store.segments import use_small_segments
from tests.support import run_threads

WRITERS = 16
SHARED_STREAMS = ["shared-0", "shared-1", "shared-2"]
APPENDS_PER_WRITER = 12


def test_sixteen_writers_on_shared_streams(store: EventStore) -> None:
    """Every conflict is raised with expected and actual; versions stay contiguous; nothing lost."""
    barrier = threading.Barrier(WRITERS)
    lock = threading.Lock()
    succeeded: list[tuple[str, int, uuid.UUID, tuple[int, ...]]] = []
    conflicts: list[ConcurrencyConflict] = []
    attempts = Counter()

    def writer(index: int) -> None:
        barrier.wait()
        done = 0
        while done < APPENDS_PER_WRITER:
            stream = SHARED_STREAMS[(index + done) % len(SHARED_STREAMS)]
            expected = store.stream_version(stream)
            event = NewEvent("note.written", {"text": f"w{index}", "n": done})
            with lock:
                attempts[index] += 1
            try:
                result = store.append(stream, expected if expected else NO_STREAM, [event])
            except ConcurrencyConflict as conflict:
                assert conflict.stream_id == stream
                assert conflict.expected == (expected if expected else "no_stream")
                assert conflict.actual > expected
                with lock:
                    conflicts.append(conflict)
                continue
            assert result.version == expected + 1
            with lock:
                succeeded.append((stream, expected, event.event_id, result.positions))
            done += 1

    run_threads([lambda i=i: writer(i) for i in range(WRITERS)])

    assert len(succeeded) == WRITERS * APPENDS_PER_WRITER
    assert sum(attempts.values()) == len(succeeded) + len(conflicts)
    # No two appends won the same expected version of a stream: a lost conflict would show here.
    assert len({(s, v) for s, v, _, _ in succeeded}) == len(succeeded)
    for stream in SHARED_STREAMS:
        events = store.read_stream(stream)
        assert [e.version for e in events] == list(range(1, len(events) + 1))
        assert store.stream_version(stream) == len(events)
        mine = {eid for s, _, eid, _ in succeeded if s == stream}
        assert {e.event_id for e in events} == mine
    log = store.read_all(0, 100_000)
    assert sorted(e.event_id for e in log) == sorted(eid for _, _, eid, _ in succeeded)
    assert [e.position for e in log] == sorted({e.position for e in log})
    assert {e.event_id: (e.position,) for e in log} == {eid: pos for _, _, eid, pos in succeeded}


def test_appends_at_one_expected_version_of_a_stream_one_wins(store: EventStore, fresh_database_url: str) -> None:
    """Eight appends race at the same expected version of one stream, the winner in a later segment
    than the stream's earlier events: exactly one is written, the others conflict (no segment holds
    a unique (stream_id, version) index; the stream's row claim decides, docs/log-segments.md)."""
    use_small_segments(fresh_database_url, size=3)
    store.append("race", NO_STREAM, [NewEvent("note.written", {"text": "first"})])
    store.append("other", NO_STREAM, [NewEvent("note.written", {"text": "fill"}) for _ in range(3)])
    outcomes: list[int | str] = []

    def append(i: int) -> None:
        try:
            outcomes.append(store.append("race", 1, [NewEvent("note.written", {"text": f"racer {i}"})]).version)
        except ConcurrencyConflict as conflict:
            outcomes.append(f"conflict at {conflict.actual}")

    run_threads([lambda i=i: append(i) for i in range(8)])
    assert sorted(outcomes, key=str) == [2] + ["conflict at 2"] * 7
    assert [e.version for e in store.read_stream("race")] == [1, 2]
    with psycopg.connect(fresh_database_url) as conn:
        assert conn.execute("SELECT count(*), count(DISTINCT tableoid) FROM events WHERE stream_id = 'race'"
                            ).fetchone() == (2, 2)


def test_readers_see_every_event_once_while_commits_land_out_of_order(store: EventStore) -> None:
    """A writer holds its transaction open while later positions commit; tailing readers miss nothing."""
    slow_appended = threading.Event()
    release_slow = threading.Event()
    writers_done = threading.Event()
    slow_result: list = []
    appended: list[uuid.UUID] = []
    lock = threading.Lock()
    seen: dict[int, list] = {r: [] for r in range(3)}

    def slow_writer() -> None:
        event = NewEvent("note.written", {"text": "late commit"})
        with store.transaction() as conn:
            slow_result.append(store.append_on(conn, "slow", NO_STREAM, [event]))
            slow_appended.set()
            assert release_slow.wait(60)
        store.committed(slow_result)
        with lock:
            appended.append(event.event_id)

    def fast_writer(index: int) -> None:
        for n in range(25):
            event = NewEvent("note.written", {"text": f"fast {index}", "n": n})
            store.append(f"fast-{index}", n or NO_STREAM, [event])
            with lock:
                appended.append(event.event_id)

    def reader(index: int) -> None:
        checkpoint = 0
        while True:
            done = writers_done.is_set()  # read before the page: an empty page after it means the end
            page = store.read_all(checkpoint, 7)
            if page:
                seen[index].extend(page)
                checkpoint = page[-1].position
            elif done:
                return
            else:
                store.wait_for_events(checkpoint, 0.2)

    slow = threading.Thread(target=run_threads, args=([slow_writer],))
    slow.start()
    assert slow_appended.wait(60)
    readers = threading.Thread(target=run_threads, args=([lambda r=r: reader(r) for r in range(3)],))
    readers.start()
    try:
        run_threads([lambda i=i: fast_writer(i) for i in range(4)])
        # 100 later positions have committed; the slow one has not, so the log is held back.
        slow_position = slow_result[0].position
        assert all(p > slow_position for p in _positions(store, appended))
        assert store.safe_position() < slow_position
        assert store.head() < slow_position
        assert store.read_all(0, 1000) == []
        assert [b.held_position for b in store.blockers()][:1] == [slow_position]
        with lock:
            assert all(e.position < slow_position for r in seen.values() for e in r)
    finally:
        release_slow.set()
        slow.join(60)
        writers_done.set()
        readers.join(60)
    assert not readers.is_alive()

    assert len(appended) == 101
    for events in seen.values():
        assert sorted(e.event_id for e in events) == sorted(appended)
        positions = [e.position for e in events]
        assert positions == sorted(set(positions))


def _positions(store: EventStore, event_ids: list[uuid.UUID]) -> list[int]:
    """Positions of committed events, read directly (whatever the safe position)."""
    with store.pool.connection() as conn:
        rows = conn.execute("SELECT position FROM events WHERE event_id = ANY(%s)", (event_ids,)).fetchall()
    return [row["position"] for row in rows]
