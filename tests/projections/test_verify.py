"""`verify`: the live tables against a rebuild at the same checkpoints, on real PostgreSQL."""

from __future__ import annotations

import importlib
import threading
import uuid

import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from infrastructure.event_store import NO_STREAM, NewEvent
from projections import documents
from projections.catalog import PROJECTORS
from projections.dead_letters import list_dead_letters, skip_dead_letter
from projections.engine import RetryPolicy, catch_up
from projections.rebuild import rebuild
from projections.verify import verify
from tests.projections import faults
from tests.projections.conftest import project_all
from tests.projections.history import History, append_history

choices = st.lists(st.tuples(st.integers(0, 40), st.integers(0, 40), st.integers(0, 1000)), min_size=1, max_size=50)
META = {"actor_id": "u1", "actor_type": "user", "session_id": "s1"}


def _scratch_tables(pool) -> list[str]:
    """Scratch tables any session still has (temporary tables named verify_*)."""
    with pool.connection() as conn:
        return [r["relname"] for r in conn.execute(
            "SELECT relname FROM pg_class WHERE relpersistence = 't' AND relname LIKE 'verify\\_%'").fetchall()]


def _differences(report) -> set[tuple]:
    return {(d.table, tuple(sorted(d.key.items())), d.kind, tuple(d.columns)) for d in report.differences}


@hsettings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(first=choices, second=choices, batch=st.integers(1, 7), seed=st.integers(0, 2**32),
       behind=st.sets(st.integers(0, 3)))
def test_a_caught_up_history_verifies_with_no_difference(store, proj_pool, first, second, batch, seed, behind):
    """After any history, verify finds nothing, even with some partitions left behind the others."""
    history = History(seed)
    append_history(store, history, first)
    project_all(proj_pool, batch_size=batch)
    append_history(store, history, second)
    # Only the partitions not `behind` catch up with `second`: checkpoints differ per partition.
    for projector in PROJECTORS.values():
        for k in set(range(4)) - behind:
            catch_up(proj_pool, projector, k, partitions=4, batch_size=batch)
    for name in PROJECTORS:
        report = verify(proj_pool, name, batch_size=batch + 2)
        assert report.differing_rows == 0 and report.differences == [] and report.ok, report
        assert len(report.checkpoints) == 4 and report.position == min(report.checkpoints)
    assert _scratch_tables(proj_pool) == []


def _workspace(store) -> dict[str, str]:
    """A document with two versions, a chain with an edge, an agent; projected."""
    doc, chain, agent = (str(uuid.uuid4()) for _ in range(3))
    store.append(doc, NO_STREAM, [
        NewEvent("document.created", {"namespace": "ns", "document_type": "t", "title": "a", "content": "x",
                                      "body": None, "metadata": {}, "version": 1}),
        NewEvent("document.updated", {"content": "y", "change_description": "c", "version": 2})], META)
    store.append(chain, NO_STREAM, [
        NewEvent("chain.created", {"name": "c", "description": "d", "metadata": {}}),
        NewEvent("chain.node_added", {"node_id": "a", "kind": "document", "ref_id": doc, "position": None}),
        NewEvent("chain.node_added", {"node_id": "b", "kind": "agent", "ref_id": agent, "position": None}),
        NewEvent("edge.created", {"edge_id": "ab", "source_id": "a", "target_id": "b", "type": "input",
                                  "metadata": {}})], META)
    store.append(agent, NO_STREAM, [NewEvent("agent.created", {"name": "p", "prompt": "q", "model": "m",
                                                                "tools": [], "metadata": {}})], META)
    return {"doc": doc, "chain": chain, "agent": agent}


def test_corrupted_rows_are_reported_with_their_kind(store, proj_pool):
    ids = _workspace(store)
    project_all(proj_pool)
    with proj_pool.connection() as conn:
        conn.execute("UPDATE document SET title = 'tampered' WHERE document_id = %s", (ids["doc"],))
        conn.execute("DELETE FROM document_version WHERE document_id = %s AND version = 1", (ids["doc"],))
        conn.execute("DELETE FROM edge WHERE chain_id = %s", (ids["chain"],))
        conn.execute("INSERT INTO agent (agent_id, name, last_event_id, last_version, last_position)"
                     " VALUES ('ghost', 'g', gen_random_uuid(), 1, 1)")
        checkpoints = {r["position"] for r in conn.execute("SELECT position FROM projection_checkpoint").fetchall()}
        dead = conn.execute("SELECT count(*) AS n FROM dead_letter").fetchone()["n"]
    docs = verify(proj_pool, "documents")
    assert docs.differing_rows == 2 and not docs.ok
    assert _differences(docs) == {
        ("document", (("document_id", ids["doc"]),), "changed", ("title",)),
        ("document_version", (("document_id", ids["doc"]), ("version", 1)), "missing", ()),
    }
    assert docs.tables["document"] == 1 and docs.tables["document_body"] == 0
    chains = verify(proj_pool, "chains")
    assert _differences(chains) == {("edge", (("chain_id", ids["chain"]), ("edge_id", "ab")), "missing", ())}
    agents = verify(proj_pool, "agents")
    assert _differences(agents) == {("agent", (("agent_id", "ghost"),), "extra", ())}
    assert agents.differences[0].stream_id == "ghost"
    assert verify(proj_pool, "documents", limit=1).differing_rows == 2  # counted beyond the listed ones
    assert len(verify(proj_pool, "documents", limit=1).differences) == 1
    # Verify wrote nothing: checkpoints and dead letters are as they were, no scratch table is left.
    with proj_pool.connection() as conn:
        assert {r["position"] for r in conn.execute("SELECT position FROM projection_checkpoint").fetchall()} \
            == checkpoints
        assert conn.execute("SELECT count(*) AS n FROM dead_letter").fetchone()["n"] == dead
    assert _scratch_tables(proj_pool) == []


def test_parked_streams_are_left_out_and_skipped_events_skipped(store, proj_pool, monkeypatch):
    faults.poison_document_titles(monkeypatch)
    good, bad = faults.append_good_and_poisoned(store, META)
    project_all(proj_pool, retry=RetryPolicy(attempts=1, first_delay=0.01))
    parked = list_dead_letters(proj_pool, "documents")
    assert {d.stream_id for d in parked} == {bad} and len(parked) == 2
    with proj_pool.connection() as conn:
        conn.execute("UPDATE document SET title = 'tampered' WHERE document_id IN (%s, %s)", (good, bad))
    report = verify(proj_pool, "documents")
    assert report.parked_streams == 1
    assert _differences(report) == {("document", (("document_id", good),), "changed", ("title",))}
    with proj_pool.connection() as conn:
        conn.execute("UPDATE document SET title = 'a' WHERE document_id = %s", (good,))
    assert verify(proj_pool, "documents").ok
    # Skip the poison event: the rest of the stream resumes live; the rebuild must skip it too
    # (else it would hold a version 2 the live tables never had).
    skip_dead_letter(proj_pool, min(parked, key=lambda d: d.position).id)
    monkeypatch.undo()
    report = verify(proj_pool, "documents")
    assert report.parked_streams == 0 and report.ok, report


def test_an_event_the_rebuild_cannot_apply_is_reported_and_nothing_is_parked(store, proj_pool, monkeypatch):
    docs = [str(uuid.uuid4()) for _ in range(4)]
    for doc, title in zip(docs, ("poison", "null", "fine", "fine")):
        store.append(doc, NO_STREAM, [
            NewEvent("document.created", {"namespace": "ns", "document_type": "t", "title": "a", "content": "x",
                                          "body": None, "metadata": {}, "version": 1}),
            NewEvent("document.updated", {"title": title, "change_description": "", "version": 2})], META)
    project_all(proj_pool)
    faults.poison_document_titles(monkeypatch)  # the handler changed since the live run applied the events
    poisoned = documents.projector.handlers["document.updated"]

    def nulls(s, e, out):  # a row the table refuses: a database error, narrowed down to its event
        poisoned(s, e, out)
        if e.payload.get("title") == "null":
            s.set_one("document", dict(s.one("document"), namespace=None))

    monkeypatch.setitem(documents.projector.handlers, "document.updated", nulls)
    report = verify(proj_pool, "documents", batch_size=8)
    assert sorted((f.stream_id, f.error.split(":")[0]) for f in report.build_failures) == sorted(
        [(docs[0], "HandlerFailure"), (docs[1], "NotNullViolation")])
    assert not report.ok and report.differing_rows >= 1  # the live rows are ahead of what the rebuild can build
    assert list_dead_letters(proj_pool, "documents") == []


def test_scratch_tables_are_dropped_when_verify_fails(store, proj_pool, monkeypatch):
    _workspace(store)
    project_all(proj_pool)

    def broken(*args, **kwargs):
        assert _scratch_tables(proj_pool)  # they exist while the verify runs
        raise RuntimeError("compare failed")

    # (the package exports the function `verify` under the module's name)
    monkeypatch.setattr(importlib.import_module("projections.verify"), "_compare", broken)
    with pytest.raises(RuntimeError, match="compare failed"):
        verify(proj_pool, "documents")
    assert _scratch_tables(proj_pool) == []


def _once(step, errors: list) -> None:
    try:
        step()
    except Exception as exc:  # noqa: BLE001 - reported by the test
        errors.append(exc)


def test_verify_holds_while_commands_arrive_workers_project_and_a_rebuild_swaps(store, proj_pool):
    """Appends and catch-ups never stop; verifies (two at once) and a rebuild run meanwhile."""
    history = History(11)
    append_history(store, history, [(i, (i * 7) % 41, i) for i in range(40)])
    project_all(proj_pool)
    stop, errors = threading.Event(), []

    def forever(step) -> None:
        try:
            while not stop.is_set():
                step()
        except Exception as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    counter = iter(range(10**9))

    def append() -> None:
        i = next(counter)
        append_history(store, history, [((i * 13) % 41, (i * 7) % 41, i)])

    threads = [threading.Thread(target=forever, args=(append,)),
               threading.Thread(target=forever, args=(lambda: project_all(proj_pool, batch_size=5),)),
               threading.Thread(target=forever, args=(lambda: project_all(proj_pool, batch_size=3),))]
    for t in threads:
        t.start()
    reports: list = []
    try:
        for round_ in range(3):
            pair = [threading.Thread(target=_once, args=(lambda n=name: reports.append(verify(proj_pool, n)), errors))
                    for name in ("documents", "documents", "chains", "agents")]
            if round_ == 1:
                pair.append(threading.Thread(target=_once, args=(
                    lambda: rebuild(proj_pool, "documents", batch_size=20), errors)))
            for t in pair:
                t.start()
            for t in pair:
                t.join(120)
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    assert errors == []
    assert len(reports) == 12
    assert [r for r in reports if not r.ok] == []
    positions = [r.position for r in reports if r.projection == "documents"]
    assert max(positions) > min(positions)  # the log moved on between verifies
    assert _scratch_tables(proj_pool) == []
