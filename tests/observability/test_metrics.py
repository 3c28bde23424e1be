"""GET /metrics of a running Chronicle: command and append metrics move with the right labels,
and the store's gauges (lag, dead letters, rebuild progress) say what the database says."""

from __future__ import annotations

import time
import uuid

import pytest
from prometheus_client import REGISTRY

from infrastructure.errors import ConcurrencyConflict
from infrastructure.event_store import EventStore, NewEvent
from projections.partitioning import lock_key
from projections.status import status
from tests.observability.conftest import labelled, scrape, value, wait_for

DOC = {"namespace": "observed", "type": "session_context", "title": "Doc", "content": "v1"}


def test_commands_are_counted_by_type_and_outcome(server, clients):
    writer = clients["writer"]
    before = scrape(server)

    created = writer.post("/v1/documents", json=DOC)
    assert created.status_code == 201
    doc = created.json()["stream_id"]
    stale = writer.patch(f"/v1/documents/{doc}", headers={"If-Match": '"7"'}, json={"content": "v2"})
    assert stale.status_code == 412  # a version conflict
    refused = writer.post(f"/v1/documents/{doc}/redo")
    assert refused.status_code >= 400 and refused.json()["code"] == "nothing_to_redo"
    updated = writer.patch(f"/v1/documents/{doc}", json={"content": "v2"})
    assert updated.status_code == 200

    after = scrape(server)

    def moved(command: str, outcome: str) -> float:
        return (value(after, "chronicle_commands_total", command=command, outcome=outcome)
                - value(before, "chronicle_commands_total", command=command, outcome=outcome))

    assert moved("CreateDocument", "accepted") == 1
    assert moved("UpdateDocument", "conflict") == 1
    assert moved("Redo", "refused") == 1
    assert moved("UpdateDocument", "accepted") == 1
    assert moved("CreateDocument", "refused") == 0
    durations = "chronicle_command_duration_seconds_count"
    assert value(after, durations, command="UpdateDocument") - value(before, durations, command="UpdateDocument") == 2
    # Two commands appended (the conflict and the refusal were decided before any append).
    appends = "chronicle_append_duration_seconds_count"
    assert value(after, appends) - value(before, appends) >= 2
    assert value(after, "chronicle_append_duration_seconds_bucket", le="+Inf") == value(after, appends)
    assert value(after, "chronicle_append_duration_seconds_sum") > 0
    appended = "chronicle_events_appended_total"
    assert value(after, appended, stream_type="document") - value(before, appended, stream_type="document") >= 2
    assert ("chronicle_append_conflicts_total", frozenset()) in after


def test_store_conflicts_are_counted(api_pool):
    """The conflict counter moves where the store refuses an append (this process's registry)."""
    store = EventStore(api_pool, accept_unregistered_types=True)
    stream = f"observed-{uuid.uuid4().hex[:8]}"
    store.append(stream, 0, [NewEvent("observed.happened", {"n": 1})], stream_type="observed")
    before = REGISTRY.get_sample_value("chronicle_append_conflicts_total") or 0
    with pytest.raises(ConcurrencyConflict):
        store.append(stream, 0, [NewEvent("observed.happened", {"n": 2})], stream_type="observed")
    assert REGISTRY.get_sample_value("chronicle_append_conflicts_total") == before + 1


def test_projection_lag_matches_the_database(server, clients, api_pool):
    """Hold every documents partition so nothing projects; the lag gauges show the waiting event."""
    writer = clients["writer"]
    first = writer.post("/v1/documents", json=DOC)
    wait_for(lambda: all(p.lag_events == 0 for p in status(api_pool, "documents")), what="documents caught up")
    partitions = len(status(api_pool, "documents"))
    with api_pool.connection() as conn:
        for k in range(partitions):
            conn.execute("SELECT pg_advisory_lock(%s, %s)", lock_key("documents", k))
        try:
            held = writer.post("/v1/documents", json=DOC)
            assert held.status_code == 201 and first.status_code == 201
            stream = held.json()["stream_id"]
            partition = conn.execute("SELECT projection_partition(%s, %s) AS k",
                                     (stream, partitions)).fetchone()["k"]
            samples = scrape(server)
            truth = {(p.partition): p for p in status(api_pool, "documents")}
            for k, p in truth.items():
                labels = {"projection": "documents", "partition": k}
                assert value(samples, "chronicle_projection_lag_events", **labels) == p.lag_events
                assert value(samples, "chronicle_projection_checkpoint_position", **labels) == p.checkpoint
            assert truth[partition].lag_events == 1
            waiting = value(samples, "chronicle_projection_lag_seconds", projection="documents", partition=partition)
            assert 0 < waiting <= truth[partition].lag_seconds + 0.5
            assert value(samples, "chronicle_log_head_position") >= int(held.headers["x-chronicle-position"])
            assert value(samples, "chronicle_store_up") == 1
        finally:
            for k in range(partitions):
                conn.execute("SELECT pg_advisory_unlock(%s, %s)", lock_key("documents", k))

    def caught_up():
        lag = labelled(scrape(server), "chronicle_projection_lag_events")
        return lag and all(v == 0 for v in lag.values())

    wait_for(caught_up, what="lag back to 0 once the partitions are free")


def test_the_log_gauges_name_a_real_blocker_and_ignore_foreign_locks(server, clients, api_pool, api_database_url):
    """An append left open below a committed one: one blocker, the head past the safe position,
    held-back seconds growing. A foreign advisory lock beside it counts for nothing."""
    import psycopg

    import service_layer.operator_events  # noqa: F401 - registers the operator.* type appended below

    store = EventStore(api_pool)
    with psycopg.connect(api_database_url, autocommit=True) as psql, store.transaction() as conn:
        psql.execute("SELECT pg_advisory_lock(1), pg_advisory_lock_shared(log_lock_key(1))")
        held = store.append_on(conn, f"operator-held-{uuid.uuid4().hex[:8]}", 0,
                               [NewEvent("operator.key_created", {"target": "held", "details": {}})],
                               stream_type="operator")
        later = clients["writer"].post("/v1/documents", json=DOC)
        assert later.status_code == 201
        time.sleep(0.3)
        samples = scrape(server)
        assert value(samples, "chronicle_log_blockers") == 1
        assert value(samples, "chronicle_log_safe_position") == held.position - 1
        assert value(samples, "chronicle_log_head_position") >= int(later.headers["x-chronicle-position"])
        assert value(samples, "chronicle_log_held_back_seconds") >= 0.3
    samples = scrape(server)
    assert value(samples, "chronicle_log_blockers") == 0 and value(samples, "chronicle_log_held_back_seconds") == 0
    assert value(samples, "chronicle_log_safe_position") >= value(samples, "chronicle_log_head_position")


def test_dead_letters_match_the_database(server, api_pool):
    stream = f"observed-parked-{uuid.uuid4().hex[:8]}"
    with api_pool.connection() as conn:
        partitions = conn.execute("SELECT partitions FROM projection WHERE name = 'agents'").fetchone()["partitions"]
        partition = conn.execute("SELECT projection_partition(%s, %s) AS k", (stream, partitions)).fetchone()["k"]
        # Positions no event has (parked rows are unique per position); the engine never reads them.
        for position, status_ in ((-3, "parked"), (-2, "parked"), (-1, "skipped")):
            conn.execute(
                "INSERT INTO dead_letter (projection, partition, position, event_id, stream_id, type, error, status)"
                " VALUES ('agents', %s, %s, %s, %s, 'agent.created', 'test', %s)",
                (partition, position, uuid.uuid4(), stream, status_))
        counts = {(r["status"]): r["n"] for r in conn.execute(
            "SELECT status, count(*) AS n FROM dead_letter WHERE projection = 'agents' AND NOT shadow"
            " GROUP BY status").fetchall()}
    samples = scrape(server)
    for p in status(api_pool, "agents"):
        parked = value(samples, "chronicle_dead_letters_parked", projection="agents", partition=p.partition)
        assert parked == p.dead_letters
    assert value(samples, "chronicle_dead_letters_parked", projection="agents", partition=partition) >= 2
    for status_, n in counts.items():
        assert value(samples, "chronicle_dead_letters", projection="agents", status=status_) == n


def test_rebuild_progress_is_reported(server, clients, api_pool):
    from projections.rebuild import rebuild, rebuild_progress

    assert clients["writer"].post("/v1/agents", json={"name": "a", "prompt": "p", "model": "m"}).status_code == 201
    rebuild(api_pool, "chains")
    done = rebuild_progress(api_pool, "chains")
    with api_pool.connection() as conn:  # a rebuild caught half way, as a worker would leave it
        conn.execute("INSERT INTO projection_rebuild (projection, state, partitions, head, total, done, eta_seconds)"
                     " VALUES ('observed-running', 'running', 4, 100, 200, 50, 12.5)")
    samples = scrape(server)
    chains = {"projection": "chains"}
    assert done is not None and done.state == "done"
    assert value(samples, "chronicle_rebuild_running", **chains) == 0
    assert value(samples, "chronicle_rebuild_events_done", **chains) == done.done
    assert value(samples, "chronicle_rebuild_events_total", **chains) == done.total
    assert value(samples, "chronicle_rebuild_progress_ratio", **chains) == 1
    running = {"projection": "observed-running"}
    assert value(samples, "chronicle_rebuild_running", **running) == 1
    assert value(samples, "chronicle_rebuild_progress_ratio", **running) == 0.25
    assert value(samples, "chronicle_rebuild_eta_seconds", **running) == 12.5


def test_in_process_workers_report_dramatiq_metrics(server, clients):
    assert clients["writer"].post("/v1/documents", json=DOC).status_code == 201

    def processed():
        samples = scrape(server)
        return value(samples, "dramatiq_messages_total", queue_name="chronicle-projections",
                     actor_name="catch_up_partition")

    assert wait_for(processed, what="dramatiq_messages_total") > 0
    samples = scrape(server)
    assert labelled(samples, "dramatiq_message_duration_milliseconds_count")


def test_shared_metrics_directory_sums_api_processes(api_database_url, tokens, tmp_path):
    """With PROMETHEUS_MULTIPROC_DIR every API process writes there and /metrics reads them all."""
    from tests.observability.conftest import chronicle_env, free_port, start, stop

    shared = tmp_path / "prom"
    shared.mkdir()
    env = chronicle_env(DATABASE_URL=api_database_url, PROMETHEUS_MULTIPROC_DIR=str(shared),
                        CHRONICLE_DATA_DIR=str(tmp_path / "data"))
    ports = [free_port(), free_port()]
    processes = [start(["serve", "--port", str(p)], env, tmp_path / f"serve{p}.log", base=f"http://127.0.0.1:{p}")
                 for p in ports]
    try:
        import httpx

        for process in processes:
            response = httpx.post(f"{process.base}/v1/documents", json=DOC, timeout=30,
                                  headers={"Authorization": f"Bearer {tokens['writer']}"})
            assert response.status_code == 201
        for process in processes:  # either process reports both commands
            samples = scrape(process.base)
            assert value(samples, "chronicle_commands_total", command="CreateDocument", outcome="accepted") == 2
            assert value(samples, "chronicle_store_up") == 1
    finally:
        for process in processes:
            stop(process.proc)
