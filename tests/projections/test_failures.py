"""The read model never loses an event: a failing batch moves no checkpoint, is read again in
smaller pieces, and only the failing event's stream is parked; projections upcast what they read.

Real PostgreSQL. Poison events are appended through the permissive contract registry, as
events stored before a bound existed would be.
"""

from __future__ import annotations

import dataclasses
import uuid

from domain.event_types import registry as domain_registry
from infrastructure.event_store import ANY, NO_STREAM, NewEvent
from projections.catalog import PROJECTORS
from projections.engine import RetryPolicy, catch_up
from projections.partitioning import partition_of
from tests.projections.conftest import dump_tables

FAST_RETRY = RetryPolicy(attempts=2, first_delay=0.01)
PARTITIONS = 4
META = {"actor_id": "u", "actor_type": "user", "session_id": "s"}


def _ids_in_partition(partition: int, n: int) -> list[str]:
    """`n` new stream ids that all fall into one partition."""
    ids: list[str] = []
    while len(ids) < n:
        sid = str(uuid.uuid4())
        if partition_of(sid, PARTITIONS) == partition:
            ids.append(sid)
    return ids


def _agent(store, agent_id: str) -> None:
    store.append(agent_id, NO_STREAM, [NewEvent("agent.created", {
        "name": "a", "prompt": "p", "model": "m", "tools": [], "metadata": {}})], META)


def _execution(store, agent_id: str, n: int, duration: int = 5) -> None:
    store.append(agent_id, ANY, [NewEvent("agent.executed", {
        "execution_id": f"x{n}", "input": {}, "output": {}, "duration_ms": duration, "tokens": 1,
        "metadata": {}})], META)


def _checkpoints(pool, projection: str) -> dict[int, int]:
    with pool.connection() as conn:
        return {r["partition"]: r["position"] for r in conn.execute(
            "SELECT partition, position FROM projection_checkpoint WHERE projection = %s", (projection,))}


def _parked(pool, projection: str) -> list[tuple[str, int]]:
    with pool.connection() as conn:
        return [(r["stream_id"], r["position"]) for r in conn.execute(
            "SELECT stream_id, position FROM dead_letter WHERE projection = %s AND status = 'parked'"
            " AND NOT shadow ORDER BY position", (projection,))]


def _head(pool) -> int:
    with pool.connection() as conn:
        return conn.execute("SELECT safe_position() AS p").fetchone()["p"]


def test_one_poison_execution_parks_only_itself_and_its_streams_later_events(store, proj_pool):
    """The red-team scenario: 3 agents, 20 executions and one execution whose duration no column
    can hold, all in one partition, appended before the worker runs. 23 effects land; the poison
    is parked with the one later event of its stream; the checkpoint reaches the head."""
    agents = _ids_in_partition(2, 3)
    for agent_id in agents:
        _agent(store, agent_id)
    for n in range(20):
        _execution(store, agents[n % 3], n)
    poisoned = agents[0]
    _execution(store, poisoned, 99, duration=10**320)  # out of range for double precision
    store.append(poisoned, ANY, [NewEvent("agent.updated", {"prompt": "after the poison"})], META)

    result = catch_up(proj_pool, PROJECTORS["agents"], 2, partitions=PARTITIONS, retry=FAST_RETRY)

    tables = dump_tables(proj_pool)
    assert sorted(a["agent_id"] for a in tables["agent"]) == sorted(agents)
    assert len(tables["agent_execution"]) == 20, "every good execution landed"
    assert "x99" not in {x["execution_id"] for x in tables["agent_execution"]}
    assert next(a for a in tables["agent"] if a["agent_id"] == poisoned)["prompt"] == "p"
    parked = _parked(proj_pool, "agents")
    assert [sid for sid, _ in parked] == [poisoned, poisoned], "the poison and its stream's later event"
    assert result.parked == 2 and result.processed == 25
    assert _checkpoints(proj_pool, "agents")[2] == _head(proj_pool)


def test_a_batch_failing_at_commit_moves_no_checkpoint_and_parks_only_its_event(store, proj_pool):
    """A deferred constraint fails the batch's COMMIT (not a statement): the events before and
    after the failing one are applied, the checkpoint moves only with what committed."""
    with proj_pool.connection() as conn:
        conn.execute("""
            CREATE FUNCTION refuse_at_commit() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF NEW.execution_id = 'refused' THEN
                    RAISE EXCEPTION 'refused at commit' USING ERRCODE = 'check_violation';
                END IF;
                RETURN NULL;
            END $$;
            CREATE CONSTRAINT TRIGGER refuse_at_commit AFTER INSERT OR UPDATE ON agent_execution
                DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION refuse_at_commit();
        """)
    good, bad = _ids_in_partition(1, 2)
    for agent_id in (good, bad):
        _agent(store, agent_id)
    _execution(store, good, 1)
    store.append(bad, ANY, [NewEvent("agent.executed", {
        "execution_id": "refused", "input": {}, "output": {}, "duration_ms": 1, "tokens": 1, "metadata": {}})], META)
    _execution(store, good, 2)

    catch_up(proj_pool, PROJECTORS["agents"], 1, partitions=PARTITIONS, retry=FAST_RETRY)

    executions = {(x["agent_id"], x["execution_id"]) for x in dump_tables(proj_pool)["agent_execution"]}
    assert executions == {(good, "x1"), (good, "x2")}
    assert [sid for sid, _ in _parked(proj_pool, "agents")] == [bad]
    assert _checkpoints(proj_pool, "agents")[1] == _head(proj_pool)


def test_a_failed_batch_leaves_the_checkpoint_where_the_database_has_it(store, proj_pool, monkeypatch):
    """While the failing event is being retried, the stored checkpoint has not passed it."""
    (agent_id,) = _ids_in_partition(0, 1)
    _agent(store, agent_id)
    _execution(store, agent_id, 1)
    seen: list[int] = []
    original = PROJECTORS["agents"].handlers["agent.executed"]

    def failing(s, e, out):
        seen.append(_checkpoints(proj_pool, "agents")[0])
        raise RuntimeError("handler bug")

    monkeypatch.setitem(PROJECTORS["agents"].handlers, "agent.executed", failing)
    catch_up(proj_pool, PROJECTORS["agents"], 0, partitions=PARTITIONS, retry=FAST_RETRY)
    monkeypatch.setitem(PROJECTORS["agents"].handlers, "agent.executed", original)
    with proj_pool.connection() as conn:
        execution_position = conn.execute(
            "SELECT position FROM events WHERE type = 'agent.executed'").fetchone()["position"]
    assert seen and all(checkpoint < execution_position for checkpoint in seen)
    assert _parked(proj_pool, "agents") == [(agent_id, execution_position)]


def test_projections_upcast_payloads_stored_under_an_older_schema_version(store, proj_pool, monkeypatch):
    """An event stored under schema version 1 reaches the projector as the current version."""
    current = domain_registry.get("agent.created")
    monkeypatch.setitem(domain_registry._types, "agent.created", dataclasses.replace(current, schema_version=2))
    monkeypatch.setitem(domain_registry._upcasters, ("agent.created", 1),
                        lambda p: {**{k: v for k, v in p.items() if k != "title"}, "name": p["title"]})
    agent_id = str(uuid.uuid4())
    store.append(agent_id, NO_STREAM, [NewEvent("agent.created", {  # the contract registry stores v1
        "title": "old shape", "prompt": "p", "model": "m", "tools": [], "metadata": {}})], META)
    for k in range(PARTITIONS):
        catch_up(proj_pool, PROJECTORS["agents"], k, partitions=PARTITIONS)
    (row,) = dump_tables(proj_pool)["agent"]
    assert row["name"] == "old shape"


def test_the_cyclic_collector_waits_during_a_batch_and_comes_back_after_one_that_failed(
        store, proj_pool, monkeypatch):
    """While a batch runs the cyclic collector is off (it would walk every stream state the run
    keeps); after the run, also one whose batches failed and were parked, it is on again."""
    import gc

    agent_id = _ids_in_partition(3, 1)[0]
    _agent(store, agent_id)
    _execution(store, agent_id, 1)
    _execution(store, agent_id, 2)
    original = PROJECTORS["agents"].handlers["agent.executed"]
    seen: list[bool] = []

    def watching(s, e, out):
        seen.append(gc.isenabled())
        if e.payload["execution_id"] == "x2":
            raise RuntimeError("a handler bug")
        original(s, e, out)

    monkeypatch.setitem(PROJECTORS["agents"].handlers, "agent.executed", watching)
    assert gc.isenabled()
    result = catch_up(proj_pool, PROJECTORS["agents"], 3, partitions=PARTITIONS, retry=FAST_RETRY)
    assert seen and not any(seen), "the collector was on inside a batch"
    assert gc.isenabled(), "the collector stayed off after the run"
    assert result.parked == 1 and _parked(proj_pool, "agents") == [(agent_id, _head(proj_pool))]
