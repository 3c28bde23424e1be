"""Bounds at the door, called directly: Workspace.handle refuses every stored field's value just
outside its bound with a DomainError naming the field (a bound's code), appending nothing;
values just inside are accepted, and the projections store them.

Also: an event stored before a bound held (the red team's 320-digit duration) still loads.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain import commands as c
from domain.bounds import BOUND_CODES, MAX_CONTEXT_ID_CHARS
from domain.errors import DomainError
from service_layer.workspace import Workspace
from infrastructure.config import Settings
from infrastructure.db import create_pool
from infrastructure.event_store import EventStore, NewEvent
from projections.catalog import PROJECTORS
from projections.engine import catch_up
from tests.contract import OUT_OF_CONTRACT
from tests.bounds_cases import CASES, EXAMPLES, HUGE, INSIDE, Case, Streams, command, inside_value, values
from tests.projections.conftest import REGISTRY as PERMISSIVE

PARTITIONS = 4


@pytest.fixture(scope="module")
def streams(workspace: Workspace) -> Streams:
    """The same streams the HTTP test aims at, made through the service."""
    ws = workspace
    doc = ws.handle(c.CreateDocument(namespace="bounds", document_type="t", title="T", content="c")).stream_id
    body_doc = ws.handle(c.CreateDocument(namespace="bounds", document_type="t", title="B", body={})).stream_id
    agent = ws.handle(c.CreateAgent(name="a", prompt="p", model="m")).stream_id
    chain = ws.handle(c.CreateChain(name="c")).stream_id
    for node in ("a", "b"):
        ws.handle(c.AddNode(chain_id=chain, node_id=node, kind="document", ref_id=doc))
    ws.handle(c.CreateEdge(chain_id=chain, edge_id="e", source_id="a", target_id="b", type="flows"))
    return Streams(chain, doc, body_doc, agent, itertools.count())


@pytest.fixture(scope="module")
def read_pool(domain_database_url: str) -> Iterator[Any]:
    pool = create_pool(domain_database_url, Settings(chronicle_pool_max_size=2), name="bounds-tests")
    yield pool
    pool.close()


def log_state(db: psycopg.Connection) -> dict[str, Any]:
    return db.execute("SELECT count(*) AS n, max(position) AS last FROM events").fetchone()


def projected(pool: Any, sql: str, params: dict[str, Any]) -> Any:
    """Catch every projection up (the workers' catch-up), then read the stored value."""
    for projector in PROJECTORS.values():
        for partition in range(PARTITIONS):
            catch_up(pool, projector, partition, partitions=PARTITIONS)
    with pool.connection() as conn:
        row = conn.execute(sql, params).fetchone()
    assert row is not None, f"not projected: {sql} {params}"
    return row["v"] if isinstance(row, dict) else row[0]


SEEN: set[tuple[str, Any]] = set()


@pytest.mark.parametrize("case", CASES, ids=[k.id for k in CASES])
@EXAMPLES
@given(data=st.data())
def test_values_just_outside_a_bound_are_refused_by_the_service(workspace, streams, db, case: Case, data) -> None:
    value = data.draw(values(case, inside=False), label="value")
    before = log_state(db)
    with pytest.raises(DomainError) as caught:
        workspace.handle(command(streams, case, value))
    assert caught.value.field == (case.domain_field or case.field)
    assert caught.value.code in BOUND_CODES, caught.value
    assert log_state(db) == before, "a refused command appended"


@pytest.mark.parametrize("case", INSIDE, ids=[k.id for k in INSIDE])
@EXAMPLES
@given(data=st.data())
def test_values_just_inside_a_bound_are_accepted_and_projected(workspace, streams, read_pool, case: Case,
                                                               data) -> None:
    value = inside_value(data, case, SEEN)
    built = command(streams, case, value)
    if case.stored is None:  # the tagged version must exist: a rule may answer, never a bound
        try:
            workspace.handle(built)
        except DomainError as error:
            assert error.code not in BOUND_CODES, error
        return
    result = workspace.handle(built)
    key = getattr(built, "node_id", None) or getattr(built, "edge_id", None) or getattr(built, "execution_id", None) \
        or getattr(built, "tag", None)
    params = {"stream": result.stream_id, "key": key, "position": result.position or 0}
    assert projected(read_pool, case.stored, params) == value


def test_the_red_team_duration_is_refused_by_the_service(workspace, streams, db) -> None:
    before = log_state(db)
    with pytest.raises(DomainError) as caught:
        workspace.handle(c.RecordExecution(agent_id=streams.agent, execution_id="red", duration_ms=HUGE, tokens=1))
    assert (caught.value.code, caught.value.field) == ("invalid_number", "duration_ms")
    with pytest.raises(DomainError) as caught:  # a command built around the check is refused by the event
        workspace.handle(c.RecordExecution.model_construct(
            agent_id=streams.agent, execution_id="red", input=None, output=None, duration_ms=HUGE, tokens=1,
            metadata={}, command_id=None, expected_version=None))
    assert (caught.value.code, caught.value.field) == ("invalid_number", "duration_ms")
    assert log_state(db) == before


@pytest.mark.parametrize("field", ["actor_id", "session_id", "correlation_id", "causation_id"])
def test_the_command_context_ids_are_bounded(field: str) -> None:
    assert getattr(c.CommandContext(**{field: "s" * MAX_CONTEXT_ID_CHARS}), field)
    for bad in ("s" * (MAX_CONTEXT_ID_CHARS + 1), "s\x00"):
        with pytest.raises(DomainError) as caught:
            c.CommandContext(**{field: bad})
        assert caught.value.field == field and caught.value.code in BOUND_CODES


def test_an_event_stored_before_a_bound_still_loads(workspace, domain_database_url) -> None:
    """The log is history: a stream holding an out-of-bounds event (as the red team's) loads and takes commands."""
    agent = workspace.handle(c.CreateAgent(name="old", prompt="p", model="m")).stream_id
    pool = create_pool(domain_database_url, Settings(chronicle_pool_min_size=1, chronicle_pool_max_size=1), name="bounds-raw")
    try:
        payload = {"execution_id": "red", "input": None, "output": None, "duration_ms": HUGE, "tokens": 1,
                   "metadata": {}}
        EventStore(pool, PERMISSIVE, Settings()).append(agent, 1, [NewEvent("agent.executed", payload)])
        OUT_OF_CONTRACT.add(str(agent))
    finally:
        pool.close()
    assert workspace.replay(agent).executions == 1
    assert workspace.handle(c.UpdateAgent(agent_id=agent, prompt="new")).version == 3
    assert workspace.get(agent).state["prompt"] == "new"
