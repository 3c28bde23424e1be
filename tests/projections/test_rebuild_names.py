"""A full rebuild gives every read table back its indexes and constraints under the names they had,
so the operator's metadata indexes stay listed, droppable and used by the metadata filter."""

from __future__ import annotations

import uuid

from infrastructure.event_store import NO_STREAM, NewEvent
from infrastructure.read_indexes import add_index, drop_index, list_indexes
from projections.catalog import PROJECTORS
from projections.rebuild import rebuild
from service_layer.read_queries import documents_sql
from tests.projections.conftest import project_all
from tests.projections.history import History, append_history
from tests.store.test_bounded_plans import assert_ordered_by, indexes, plan

# The names of a table's indexes and of its constraints.
NAMES = (
    "SELECT 'index' AS kind, c.relname AS name FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
    " WHERE i.indrelid = %(t)s::regclass"
    " UNION ALL SELECT 'constraint', conname FROM pg_constraint WHERE conrelid = %(t)s::regclass ORDER BY 1, 2"
)


def _names(pool, tables: tuple[str, ...]) -> dict[str, list[tuple[str, str]]]:
    with pool.connection() as conn:
        return {t: [(r["kind"], r["name"]) for r in conn.execute(NAMES, {"t": t}).fetchall()] for t in tables}


def test_a_rebuild_keeps_the_names_of_every_read_tables_indexes_and_constraints(store, proj_pool):
    append_history(store, History(5), [(i * 3 + 1, i * 7, i) for i in range(90)])
    project_all(proj_pool)
    for name, projector in PROJECTORS.items():
        before = _names(proj_pool, projector.tables)
        assert all(before.values()), before
        for _ in range(2):  # names a second copy would number differently stay too
            rebuild(proj_pool, name, batch_size=25)
            assert _names(proj_pool, projector.tables) == before, name


def test_an_operator_index_stays_listed_droppable_and_used_after_a_rebuild(store, proj_pool, fresh_database_url):
    meta = {"actor_id": "u", "actor_type": "user"}
    for n in range(1200):
        store.append(str(uuid.uuid4()), NO_STREAM, [NewEvent("document.created", {
            "namespace": "ns", "document_type": ("llm_interaction", "prompt", "note")[n % 3], "title": f"t{n}",
            "content": f"body {n}", "body": None, "metadata": {"agent_type": f"a{n % 4}"}, "version": 1})], meta)
    project_all(proj_pool)
    index = add_index(fresh_database_url, "llm_interaction", "agent_type")
    rebuild(proj_pool, "documents", batch_size=200)
    with proj_pool.connection() as conn:
        assert [(i.name, i.document_type, i.field, i.valid) for i in list_indexes(conn)] == [
            (index.name, "llm_interaction", "agent_type", True)]
        conn.execute("ANALYZE document")
        query = documents_sql([], ["llm_interaction"], [], None, [("agent_type", "a3")], None, 21)
        assert index.name in indexes(plan(conn, *query))
        with conn.transaction():  # a table this small is read through a bitmap and sorted, else in order
            conn.execute("SET LOCAL enable_bitmapscan = off")
            assert_ordered_by(plan(conn, *query), index.name)
    assert drop_index(fresh_database_url, index.name)
    with proj_pool.connection() as conn:
        assert list_indexes(conn) == []


def test_an_operator_index_added_while_a_rebuild_runs_survives_its_swap(store, proj_pool, fresh_database_url,
                                                                        monkeypatch):
    """`indexes add` after the rebuild made its shadows: the swap builds the index on the shadow.

    The index is added as the rebuild's bulk run starts, through a wrapper around that run
    (a seam in our own code, so the moment is certain)."""
    import projections.rebuild as rebuilding

    append_history(store, History(7), [(i * 3 + 1, i * 7, i) for i in range(60)])
    project_all(proj_pool)
    added = []
    bulk_run = rebuilding.run

    def run_after_an_index_is_added(conn, job, **kw):
        if not added:
            added.append(add_index(fresh_database_url, None, "agent_type"))
        return bulk_run(conn, job, **kw)

    monkeypatch.setattr(rebuilding, "run", run_after_an_index_is_added)
    rebuild(proj_pool, "documents", batch_size=25)
    with proj_pool.connection() as conn:
        assert [(i.name, i.document_type, i.field, i.valid) for i in list_indexes(conn)] == [
            (added[0].name, None, "agent_type", True)]
    assert drop_index(fresh_database_url, added[0].name)
