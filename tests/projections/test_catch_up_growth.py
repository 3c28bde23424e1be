"""What keeps catch-up and rebuild rates level as the log grows: the run's stream states kept
most recently used first, and a rebuild that builds its read indexes once, after the bulk."""

from __future__ import annotations

from infrastructure.read_indexes import add_index
from projections import job as job_module
from projections.catalog import PROJECTORS
from projections.job import Job
from projections.model import StreamRows
from projections.rebuild import rebuild
from tests.projections.conftest import dump_tables, project_all
from tests.projections.history import History, append_history

# Each index of the projection's tables as built (its name left out: test_rebuild_names checks names), and its comment.
INDEXES = (
    "SELECT regexp_replace(pg_get_indexdef(i.indexrelid), 'INDEX \\S+ ON \\S+', 'INDEX ON ' || t.relname) AS definition,"
    " obj_description(i.indexrelid, 'pg_class') AS note, i.indisvalid AS valid"
    " FROM pg_index i JOIN pg_class t ON t.oid = i.indrelid WHERE t.relname = ANY(%s) ORDER BY 1"
)


def _states(*stream_ids: str) -> dict[str, StreamRows]:
    return {s: StreamRows(s, {"agent": {}}) for s in stream_ids}


def test_a_run_keeps_its_most_recently_used_stream_states_up_to_the_bound(monkeypatch):
    monkeypatch.setattr(job_module, "MAX_KNOWN_STREAMS", 3)
    job = Job(PROJECTORS["agents"], 1, (0,), {"agent": "agent"}, positions={0: 0})
    job.applied = _states("a", "b", "c")
    job.committed(10, 3)
    job.applied = _states("a", "d")
    job.committed(20, 2)
    # b was used least recently; a, used again, stays with c and the new d.
    assert list(job.known) == ["c", "a", "d"]
    job.applied = _states("e", "f", "g", "h")
    job.committed(30, 4)
    assert list(job.known) == ["f", "g", "h"]


def test_a_rebuild_gives_the_read_tables_back_every_index_with_its_comment(store, proj_pool, fresh_database_url):
    append_history(store, History(11), [(i * 3 + 1, i * 7, i) for i in range(120)])
    project_all(proj_pool)
    add_index(fresh_database_url, "prompt", "model")  # an operator index, known by its comment
    tables = list(PROJECTORS["documents"].tables)
    with proj_pool.connection() as conn:
        before = conn.execute(INDEXES, (tables,)).fetchall()
    expected = dump_tables(proj_pool)
    rebuild(proj_pool, "documents", batch_size=25)
    with proj_pool.connection() as conn:
        after = conn.execute(INDEXES, (tables,)).fetchall()
    assert any(r["note"] == "prompt\tmodel" for r in before)
    assert after == before
    assert dump_tables(proj_pool) == expected
