"""Projections on real PostgreSQL: rebuild == incremental, poison events, rebuild under reads, replay, status."""

from __future__ import annotations

import threading
import uuid

from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from infrastructure.event_store import NO_STREAM, NewEvent
from projections.dead_letters import list_dead_letters, retry_dead_letters, skip_dead_letter
from projections.engine import RetryPolicy
from projections.rebuild import rebuild, rebuild_all, rebuild_progress, replay
from projections.status import status
from tests.projections import faults
from tests.projections.conftest import dump_tables, project_all
from tests.projections.history import History, append_history

choices = st.lists(st.tuples(st.integers(0, 40), st.integers(0, 40), st.integers(0, 1000)), min_size=1, max_size=60)


@hsettings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(first=choices, second=choices, batch=st.integers(1, 7), seed=st.integers(0, 2**32))
def test_rebuild_equals_incremental(store, proj_pool, first, second, batch, seed):
    history = History(seed)
    project_all(proj_pool)  # examples share the database: start level with the log
    append_history(store, history, first)
    project_all(proj_pool, batch_size=batch)
    append_history(store, history, second)
    project_all(proj_pool, batch_size=batch)
    incremental = dump_tables(proj_pool)
    rebuild_all(proj_pool, batch_size=50)
    assert dump_tables(proj_pool) == incremental


def test_documents_versions_tags_and_delete(store, proj_pool):
    doc = str(uuid.uuid4())
    meta = {"actor_id": "u1", "actor_type": "user", "session_id": "s9"}
    store.append(doc, NO_STREAM, [
        NewEvent("document.created", {"namespace": "ns", "document_type": "t", "title": "a", "content": "x",
                                      "body": None, "metadata": {"m": 1}, "version": 1}),
        NewEvent("document.updated", {"content": "y", "change_description": "c", "version": 2}),
        NewEvent("document.updated", {"content": "x", "change_description": "back", "version": 3}),
        NewEvent("document.tagged", {"tag": "production", "version": 2, "previous_version": None}),
        NewEvent("document.deleted", {"reason": "r"})], meta)
    project_all(proj_pool)
    t = dump_tables(proj_pool)
    assert t["document"] == [] and t["active_tag"] == []
    assert [v["version"] for v in t["document_version"]] == [1, 2, 3]
    assert len(t["document_body"]) == 2  # "x" is stored once
    store.append(doc, 5, [NewEvent("document.restored", {"reason": "back"})], meta)
    project_all(proj_pool)
    t = dump_tables(proj_pool)
    assert t["document"][0]["version"] == 3 and t["document"][0]["session_id"] == "s9"
    assert [(a["tag"], a["document_version"]) for a in t["active_tag"]] == [("production", 2)]
    with proj_pool.connection() as conn:  # keyset page by session, newest first
        rows = conn.execute("SELECT document_id FROM document WHERE session_id = %s"
                            " AND created_position < %s ORDER BY created_position DESC LIMIT 10",
                            ("s9", 2**62)).fetchall()
    assert [r["document_id"] for r in rows] == [doc]


def test_poison_event_parks_its_stream_only(store, proj_pool, monkeypatch):
    faults.poison_document_titles(monkeypatch)
    good, bad = faults.append_good_and_poisoned(store)
    store.append(good, 1, [NewEvent("document.updated", {"title": "fine", "change_description": "", "version": 2})])
    project_all(proj_pool, retry=RetryPolicy(attempts=2, first_delay=0.01))
    snap = {r["document_id"]: r for r in dump_tables(proj_pool)["document"]}
    assert snap[good]["title"] == "fine" and snap[bad]["title"] == "a"
    parked = list_dead_letters(proj_pool, "documents")
    assert [(d.stream_id, d.attempts) for d in parked] == [(bad, 2), (bad, 0)]
    assert "cannot project" in parked[0].error
    assert any(s.state == "parked" and s.dead_letters == 2 for s in status(proj_pool, "documents"))
    # Later events of the parked stream park too.
    store.append(bad, 3, [NewEvent("document.updated", {"title": "later", "change_description": "", "version": 4})])
    project_all(proj_pool)
    assert len(list_dead_letters(proj_pool, "documents")) == 3
    assert retry_dead_letters(proj_pool, "documents").still_parked == [bad]
    # Skip the poison event: the stream resumes in order.
    outcome = skip_dead_letter(proj_pool, parked[0].id)
    assert outcome.resumed == [bad]
    snap = {r["document_id"]: r for r in dump_tables(proj_pool)["document"]}
    assert snap[bad]["title"] == "later" and snap[bad]["version"] == 4
    assert list_dead_letters(proj_pool, "documents") == []
    store.append(bad, 4, [NewEvent("document.updated", {"title": "live", "change_description": "", "version": 5})])
    project_all(proj_pool)
    assert {r["document_id"]: r for r in dump_tables(proj_pool)["document"]}[bad]["title"] == "live"
    # A rebuild honours the skip.
    before = dump_tables(proj_pool)
    rebuild(proj_pool, "documents")
    assert dump_tables(proj_pool) == before


def test_rebuild_while_reads_go_on(store, proj_pool):
    history = History(7)
    append_history(store, history, [(i * 7 + 1, i, i * 13) for i in range(400)])
    project_all(proj_pool)
    expected = dump_tables(proj_pool)
    counts, errors, stop = [], [], threading.Event()

    def read():
        try:
            with proj_pool.connection() as conn:
                while not stop.is_set():
                    counts.append(conn.execute("SELECT count(*) AS n FROM document_version").fetchone()["n"])
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        progress = rebuild(proj_pool, "documents", batch_size=20)
    finally:
        stop.set()
        reader.join()
    assert not errors and counts and min(counts) == len(expected["document_version"])
    assert progress.state == "done" and progress.done == progress.total > 0
    assert rebuild_progress(proj_pool, "documents").rate > 0
    assert dump_tables(proj_pool) == expected


def test_replay_and_status(store, proj_pool):
    history = History(3)
    append_history(store, history, [(i, i * 5, i) for i in range(60)])
    project_all(proj_pool)
    before = dump_tables(proj_pool)
    rows = status(proj_pool)
    assert {r.state for r in rows} == {"running"} and all(r.lag_events == 0 for r in rows)
    assert len(replay(proj_pool, "agents", 0)) > 0
    lagging = [r for r in status(proj_pool, "agents") if r.lag_events]
    assert lagging and all(r.lag_seconds > 0 for r in lagging)
    project_all(proj_pool)
    assert dump_tables(proj_pool) == before


def _wait_backend_gone(pool, pid: int) -> None:
    """Wait until a closed session's server process has exited (it releases its locks then)."""
    import time

    deadline = time.monotonic() + 10
    with pool.connection() as conn:
        while time.monotonic() < deadline and conn.execute(
                "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = %s) AS alive", (pid,)).fetchone()["alive"]:
            time.sleep(0.01)


def test_crashed_rebuild_shows_in_status_and_the_next_rebuild_cleans_up(store, proj_pool, fresh_database_url):
    import psycopg

    from projections.partitioning import REBUILD_LOCK_PARTITION, lock_key

    append_history(store, History(21), [(i, i, i) for i in range(30)])
    project_all(proj_pool)
    live = dump_tables(proj_pool)
    # A rebuilding session that dies before its swap: a running row, shadow tables, then gone.
    with psycopg.connect(fresh_database_url, autocommit=True) as dying:
        dying.execute("SELECT pg_advisory_lock(%s, %s)", lock_key("agents", REBUILD_LOCK_PARTITION))
        dying.execute("INSERT INTO projection_rebuild (projection, partitions, head, total) VALUES ('agents', 4, 1, 1)")
        dying.execute('CREATE TABLE "agent__rebuild" (LIKE agent INCLUDING ALL)')
        assert {s.rebuild for s in status(proj_pool, "agents")} == {"running"}
        pid = dying.info.backend_pid
    _wait_backend_gone(proj_pool, pid)  # its locks go only when the server process has exited
    assert {s.rebuild for s in status(proj_pool, "agents")} == {"crashed"}
    assert rebuild_progress(proj_pool, "agents").state == "crashed"
    done = rebuild(proj_pool, "agents")
    assert done.state == "done" and {s.rebuild for s in status(proj_pool, "agents")} == {None}
    with proj_pool.connection() as conn:
        states = [r["state"] for r in conn.execute(
            "SELECT state FROM projection_rebuild WHERE projection = 'agents' ORDER BY id").fetchall()]
        shadows = conn.execute("SELECT count(*) AS n FROM pg_class WHERE relname LIKE '%%\\_\\_rebuild'").fetchone()["n"]
    assert states == ["failed", "done"] and shadows == 0
    assert dump_tables(proj_pool) == live


def test_a_wakeup_with_another_partition_count_catches_up_every_partition(store, proj_pool):
    from projections.catalog import PROJECTORS
    from projections.engine import catch_up, forget_checkpoints
    from projections.partitioning import partition_of
    from workers.wakeups import install_wakeups

    project_all(proj_pool)  # the projections exist with 4 partitions
    rebuild(proj_pool, "documents", partitions=8)
    sent: list[tuple] = []
    install_wakeups(store, partitions=4, send=lambda *m: sent.append(m))  # the setting says 4; the database 8
    doc = str(uuid.uuid4())
    result = store.append(doc, NO_STREAM, [NewEvent("document.created", {
        "namespace": "ns", "document_type": "t", "title": "a", "content": "x", "body": None, "metadata": {}})])
    assert sent == [("documents", partition_of(doc, 8), result.position, 8)]
    # A wake-up computed with a stale count names the wrong partition: every partition is caught up.
    forget_checkpoints()
    wrong = (partition_of(doc, 8) + 1) % 8
    catch_up(proj_pool, PROJECTORS["documents"], wrong, partitions=4, target=result.position, assumed=4)
    assert [r["document_id"] for r in dump_tables(proj_pool)["document"]] == [doc]


def test_a_tombstone_is_the_same_whether_its_state_was_kept_or_loaded(store, proj_pool):
    """A deleted document's tombstone lists its tags in tag order: the same after a catch-up that
    loaded the document's rows from the read model (heap order, a moved tag last) as after a
    rebuild that kept them in memory (the order the tags were first set)."""
    doc = str(uuid.uuid4())
    meta = {"actor_id": "u1", "actor_type": "user", "session_id": "s9"}
    store.append(doc, NO_STREAM, [
        NewEvent("document.created", {"namespace": "ns", "document_type": "t", "title": "a", "content": "x",
                                      "body": None, "metadata": {}, "version": 1}),
        NewEvent("document.updated", {"content": "y", "change_description": "c", "version": 2}),
        NewEvent("document.tagged", {"tag": "b", "version": 1, "previous_version": None}),
        NewEvent("document.tagged", {"tag": "a", "version": 1, "previous_version": None})], meta)
    project_all(proj_pool)
    store.append(doc, 4, [NewEvent("document.tagged", {"tag": "b", "version": 2, "previous_version": 1})], meta)
    project_all(proj_pool)  # the moved tag's row is rewritten
    store.append(doc, 5, [NewEvent("document.deleted", {"reason": "r"})], meta)
    project_all(proj_pool)  # a new run: the document's rows are loaded, not kept
    loaded = dump_tables(proj_pool)["document_tombstone"]
    rebuild_all(proj_pool)  # one run: the rows are kept in memory from the first event on
    assert dump_tables(proj_pool)["document_tombstone"] == loaded
    assert [t["tag"] for t in loaded[0]["state"]["tags"]] == ["a", "b"]
