"""The read side agrees with the domain: commands through the application service, projected
by the workers' catch-up, give snapshot rows equal to each stream's live state.

Random command histories (the domain laws' generators, undo and redo mixed in) run on real
PostgreSQL; after catch-up every snapshot table is compared with `Workspace.get(...)`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from psycopg.rows import dict_row

from domain.errors import DomainError
from service_layer.workspace import Workspace
from infrastructure.config import Settings
from infrastructure.db import create_pool
from projections.catalog import PROJECTORS
from projections.engine import catch_up
from tests.domain.test_laws import command_for, create, ops
from tests.support import workspace_on

PARTITIONS = 4


@pytest.fixture(scope="module")
def workspace(database_url: str) -> Iterator[Workspace]:
    app = workspace_on(database_url, snapshot_interval=5)
    yield app
    app.close()


@pytest.fixture(scope="module")
def read_pool(database_url: str):
    pool = create_pool(database_url, Settings(chronicle_pool_max_size=4), name="read-model-tests")
    yield pool
    pool.close()


@pytest.fixture(scope="module")
def refs(workspace: Workspace) -> dict[str, str]:
    return {"document": create(workspace, "document"), "agent": create(workspace, "agent")}


def project(pool) -> None:
    for projector in PROJECTORS.values():
        for partition in range(PARTITIONS):
            catch_up(pool, projector, partition, partitions=PARTITIONS)


def rows(pool, sql: str, *params: Any) -> list[dict[str, Any]]:
    with pool.connection() as conn:
        conn.row_factory = dict_row
        return conn.execute(sql, params).fetchall()


def assert_chain_projected(pool, stream_id: str, state: dict[str, Any], version: int) -> None:
    snapshot = rows(pool, "SELECT * FROM chain WHERE chain_id = %s", stream_id)
    edges = rows(pool, "SELECT * FROM edge WHERE chain_id = %s ORDER BY edge_id", stream_id)
    if state["deleted"]:
        assert snapshot == [] and edges == [], "a deleted chain leaves the current tables"
        return
    (row,) = snapshot
    for field in ("name", "description", "metadata", "canvas_state", "viewport", "nodes"):
        assert row[field] == state[field], field
    assert row["last_version"] == version
    assert {e["edge_id"]: {k: e[k] for k in ("source_id", "target_id", "type", "metadata")} for e in edges} == {
        edge_id: {k: edge[k] for k in ("source_id", "target_id", "type", "metadata")}
        for edge_id, edge in state["edges"].items()
    }


def assert_document_projected(pool, stream_id: str, state: dict[str, Any], version: int) -> None:
    snapshot = rows(pool, "SELECT * FROM document WHERE document_id = %s", stream_id)
    tags = rows(pool, "SELECT tag, document_version FROM active_tag WHERE document_id = %s", stream_id)
    if state["deleted"]:
        assert snapshot == [], "a deleted document leaves the current tables"
    else:
        (row,) = snapshot
        for field in ("namespace", "document_type", "title", "content", "body", "metadata", "version"):
            assert row[field] == state[field], field
        assert row["last_version"] == version
        # The current version's row exists in the version history with the same body.
        (current,) = rows(
            pool,
            "SELECT b.content, b.body FROM document_version v JOIN document_body b USING (body_hash)"
            " WHERE v.document_id = %s AND v.version = %s",
            stream_id, state["version"],
        )
        assert (current["content"], current["body"]) == (state["content"], state["body"])
        assert {t["tag"]: t["document_version"] for t in tags} == state["tags"]


def assert_agent_projected(pool, stream_id: str, state: dict[str, Any], version: int, executions: int) -> None:
    snapshot = rows(pool, "SELECT * FROM agent WHERE agent_id = %s", stream_id)
    if state["deleted"]:
        assert snapshot == []
    else:
        (row,) = snapshot
        for field in ("name", "prompt", "model", "tools", "metadata"):
            assert row[field] == state[field], field
        assert row["last_version"] == version
    (count,) = rows(pool, "SELECT count(*) AS n FROM agent_execution WHERE agent_id = %s", stream_id)
    assert count["n"] == executions, "every recorded execution is projected, once"


def assert_projected(pool, kind: str, stream_id: str, live: Any, executions: int) -> None:
    """The stream's read rows equal its live aggregate, whichever kind of stream it is."""
    if kind == "chain":
        assert_chain_projected(pool, stream_id, live.state, live.version)
    elif kind == "document":
        assert_document_projected(pool, stream_id, live.state, live.version)
    else:
        assert_agent_projected(pool, stream_id, live.state, live.version, executions)


def run_stream(workspace: Workspace, kind: str, sequence: list[tuple[Any, ...]],
               refs: dict[str, str]) -> tuple[str, int]:
    """Create a stream of `kind` and send it the commands; (its id, executions recorded).

    Commands the domain refuses are skipped, as a client would move on.
    """
    stream_id = create(workspace, kind)
    executions = 0
    for step, op in enumerate(sequence):
        try:
            result = workspace.handle(command_for(kind, op, stream_id, refs, step))
        except DomainError:
            continue
        executions += op[0] == "execute" and bool(result.appended)
    return stream_id, executions


@pytest.mark.parametrize("kind", ["chain", "document", "agent"])
def test_projected_rows_equal_live_state(workspace, read_pool, refs, kind: str) -> None:
    @settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(sequence=ops[kind])
    def projected_equals_live(sequence: list[tuple[Any, ...]]) -> None:
        stream_id, executions = run_stream(workspace, kind, sequence, refs)
        project(read_pool)
        assert_projected(read_pool, kind, stream_id, workspace.get(stream_id), executions)

    projected_equals_live()


def test_checkpoints_reach_the_head(workspace, read_pool, refs) -> None:
    """After catch-up, no partition of any projection lags the log."""
    project(read_pool)
    from projections.status import status

    for partition in status(read_pool):
        assert partition.lag_events == 0, partition
