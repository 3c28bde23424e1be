"""Rebuild and replay as worker jobs: requested through the API, run by a real worker process on
Redis, killed half way, run again; the operator events that record request and completion.

The tick is off (CHRONICLE_TICK_SECONDS=0) except where a test proves the tick finds a job
whose message was lost.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import psycopg
import psycopg.rows
import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from infrastructure.event_store import EventStore
from projections import jobs
from projections.partitioning import lock_key
from tests.api.conftest import chronicle_env, free_port, running_chronicle
from tests.projections.conftest import REGISTRY, dump_tables, project_all
from tests.projections.history import History, append_history
from tests.workers.conftest import SHARED_REDIS, WorkerProcess
from workers import jobs as worker_jobs

FINISHED = ("done", "failed", "crashed")


def _worker(url: str, namespace: str, tick: str = "0") -> WorkerProcess:
    worker = WorkerProcess(url, SHARED_REDIS, namespace)
    worker.env["CHRONICLE_TICK_SECONDS"] = tick
    return worker


@contextmanager
def _api(url: str, namespace: str, tmp_path) -> Iterator[dict[str, httpx.Client]]:
    """`chronicle up` on Redis (so no in-process workers), with operator and auditor clients."""
    from service_layer.keys import create_key
    from infrastructure.config import Settings
    from infrastructure.db import create_pool

    pool = create_pool(url, Settings(chronicle_pool_min_size=1, chronicle_pool_max_size=1))
    try:
        tokens = {role: create_key(pool, f"t-{role}", role, actor_id=f"svc-{role}")[1]
                  for role in ("operator", "auditor")}
    finally:
        pool.close()
    env = chronicle_env(DATABASE_URL=url, REDIS_URL=SHARED_REDIS, CHRONICLE_BROKER_NAMESPACE=namespace,
                        CHRONICLE_TICK_SECONDS="0", CHRONICLE_DATA_DIR=str(tmp_path / "data"))
    with running_chronicle(env, tmp_path / "server.log", free_port()) as base:
        clients = {role: httpx.Client(base_url=base, headers={"Authorization": f"Bearer {t}"}, timeout=30)
                   for role, t in tokens.items()}
        try:
            yield clients
        finally:
            for client in clients.values():
                client.close()


def _until(check, timeout: float = 60, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _finished(client: httpx.Client, name: str = "documents", timeout: float = 60) -> dict:
    return _until(lambda: (p := client.get(f"/v1/projections/{name}/rebuild").json())["state"] in FINISHED and p,
                  timeout, f"the rebuild of {name} to finish")


def _operator_events(client: httpx.Client, *types: str) -> list[dict]:
    return client.get("/v1/events", params={"stream_type": "operator", "type": list(types)}).json()["events"]


@pytest.fixture
def seeded(store, proj_pool) -> dict:
    """A log of a few hundred events, projected; the live tables' rows."""
    append_history(store, History(21), [(i, i * 7, i) for i in range(400)])
    project_all(proj_pool)
    return dump_tables(proj_pool)


def test_a_worker_runs_the_requested_rebuild(proj_pool, fresh_database_url, namespace, seeded, tmp_path):
    worker = _worker(fresh_database_url, namespace)
    with _api(fresh_database_url, namespace, tmp_path) as clients:
        operator, auditor = clients["operator"], clients["auditor"]
        started = operator.post("/v1/projections/documents/rebuild", json={"partitions": 4})
        assert started.status_code == 202, started.text
        assert started.headers["location"] == "/v1/projections/documents/rebuild"
        job_id = started.json()["job_id"]
        # No worker yet: the job waits, and a second request is refused.
        assert operator.get("/v1/projections/documents/rebuild").json()["state"] == "requested"
        again = operator.post("/v1/projections/documents/rebuild")
        assert again.status_code == 409 and again.json()["code"] == "rebuild_in_progress", again.text
        worker.start()  # the message waits in Redis (the tick is off)
        try:
            progress = _finished(operator)
        finally:
            worker.stop()
        assert progress["state"] == "done" and progress["job_id"] == job_id
        assert progress["done"] == progress["total"] > 0
        assert dump_tables(proj_pool) == seeded
        requested = _operator_events(auditor, "operator.projection_rebuild_requested")
        done = _until(lambda: _operator_events(auditor, "operator.projection_rebuilt"), 10, "the completion event")
        assert [(e["metadata"]["actor_id"], e["payload"]["details"]["job_id"]) for e in requested] == \
            [("svc-operator", job_id)]
        assert requested[0]["payload"]["details"]["partitions"] == 4
        details = done[0]["payload"]["details"]
        assert done[0]["metadata"]["actor_id"] == "svc-operator" and len(done) == 1
        assert details["job_id"] == job_id and details["events_done"] == progress["done"]
        assert details["state"] == "done" and details["duration_seconds"] >= 0
        assert done[0]["metadata"]["causation_id"] == requested[0]["event_id"]


def test_a_worker_killed_mid_rebuild_leaves_the_live_tables_and_the_next_rebuild_finishes(
        proj_pool, fresh_database_url, namespace, seeded, tmp_path, admin_url):
    first, second = _worker(fresh_database_url, namespace), _worker(fresh_database_url, namespace)
    with _api(fresh_database_url, namespace, tmp_path) as clients, \
            psycopg.connect(fresh_database_url, autocommit=True) as holder:
        operator = clients["operator"]
        # Hold partition 0's lock: the rebuild fills its shadows, then waits at the swap.
        holder.execute("SELECT pg_advisory_lock(%s, %s)", lock_key("documents", 0))
        first.start()
        try:
            job_id = operator.post("/v1/projections/documents/rebuild").json()["job_id"]
            _until(lambda: holder.execute(
                "SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND wait_event = 'advisory'"
                " AND datname = current_database()").fetchone(), 60, "the rebuild to wait at its swap")
            view = operator.get("/v1/projections/documents/rebuild").json()
            assert view["state"] == "running" and view["done"] == view["total"] > 0
            assert dump_tables(proj_pool) == seeded  # reads answer from the live tables
            first.kill()
            assert dump_tables(proj_pool) == seeded
        finally:
            first.kill()
            # The dead worker's session ends once it can no longer wait on our lock.
            holder.execute("SELECT pg_advisory_unlock(%s, %s)", lock_key("documents", 0))
        crashed = _finished(operator, timeout=30)
        assert crashed["state"] == "crashed" and crashed["job_id"] == job_id
        assert dump_tables(proj_pool) == seeded
        with proj_pool.connection() as conn:
            assert conn.execute("SELECT to_regclass('document__rebuild') AS t").fetchone()["t"]

        second.start()
        try:
            restarted = operator.post("/v1/projections/documents/rebuild")
            assert restarted.status_code == 202, restarted.text
            done = _finished(operator)
        finally:
            second.stop()
        assert done["state"] == "done" and done["job_id"] == restarted.json()["job_id"] != job_id
        assert dump_tables(proj_pool) == seeded
        with proj_pool.connection() as conn:
            assert conn.execute("SELECT to_regclass('document__rebuild') AS t").fetchone()["t"] is None
            old = jobs.get_job(conn, job_id)
        assert old.state == "failed" and old.error == jobs.CRASHED
        # Listed once the second worker reports it (after its own job ends) and the safe position
        # passes it; it waits as long as the test's other waits.
        try:
            failed = _until(lambda: _operator_events(clients["auditor"], "operator.projection_rebuild_failed"), 60,
                            "the failure event")
        except AssertionError as timed_out:  # say which: never appended, or held back from readers (by whom)
            with psycopg.connect(fresh_database_url, row_factory=psycopg.rows.dict_row) as conn:
                state = {q: conn.execute(q).fetchall() for q in (
                    "SELECT id, state, reported_at FROM projection_job ORDER BY id",
                    "SELECT position, type FROM events WHERE stream_type = 'operator' ORDER BY position",
                    "SELECT safe_position(), (SELECT max(position) FROM events) AS head",
                    "SELECT l.held_position, a.pid, a.state, a.application_name, a.xact_start, left(a.query, 200) AS q"
                    " FROM log_append_locks() l LEFT JOIN pg_stat_activity a ON a.pid = l.pid")}
            raise AssertionError(f"{timed_out}: {state}") from None
        assert [e["payload"]["details"]["job_id"] for e in failed] == [job_id]


def test_the_tick_runs_a_job_whose_message_was_lost(proj_pool, fresh_database_url, namespace, seeded):
    import service_layer.operator_events  # noqa: F401 - registers the operator.* types

    store = EventStore(proj_pool)
    # Requested with no wake-up at all (a lost message; or a CLI with no broker to send to).
    job = worker_jobs.request(store, "rebuild", "chains", {"partitions": None}, actor_id="ops").job
    replay = worker_jobs.request(store, "replay", "agents", {"from_position": 0}, actor_id="ops").job
    quiet = _worker(fresh_database_url, namespace, tick="0")
    quiet.start()
    try:
        time.sleep(4)  # the worker is up; with the tick off nothing finds the jobs
        assert jobs.job_view(proj_pool, job_id=job.id)["state"] == "requested"
    finally:
        quiet.stop()
    ticking = _worker(fresh_database_url, namespace, tick="0.5")
    ticking.start()
    try:
        _until(lambda: jobs.job_view(proj_pool, job_id=job.id)["state"] in FINISHED, 60, "the tick's rebuild")
        _until(lambda: jobs.job_view(proj_pool, job_id=replay.id, kind="replay")["state"] in FINISHED, 60,
               "the tick's replay")
    finally:
        ticking.stop()
    assert jobs.job_view(proj_pool, job_id=job.id)["state"] == "done"
    replayed = jobs.job_view(proj_pool, job_id=replay.id, kind="replay")
    assert replayed["state"] == "done" and replayed["job"]["events_done"] > 0
    assert dump_tables(proj_pool) == seeded


def test_a_failing_rebuild_fails_its_job_and_says_why(proj_pool, seeded):
    import service_layer.operator_events  # noqa: F401 - registers the operator.* types

    store = EventStore(proj_pool)
    job = worker_jobs.request(store, "rebuild", "agents", {"partitions": None}, actor_id="ops",
                              actor_type="user").job
    with proj_pool.connection() as conn:  # a view where the rebuild's shadow table goes
        conn.execute("CREATE VIEW agent__rebuild AS SELECT 1 AS x")
    assert worker_jobs.run_rebuild(proj_pool, "agents") == job.id
    view = jobs.job_view(proj_pool, job_id=job.id)
    assert view["state"] == "failed" and "agent__rebuild" in view["error"]
    assert dump_tables(proj_pool) == seeded
    assert worker_jobs.run_rebuild(proj_pool, "agents") is None  # nothing requested any more
    with proj_pool.connection() as conn:
        events = conn.execute("SELECT type, payload, metadata FROM events WHERE stream_id = 'operator'"
                              " ORDER BY position").fetchall()
    assert [e["type"] for e in events] == ["operator.projection_rebuild_requested",
                                           "operator.projection_rebuild_failed"]
    assert events[1]["payload"]["details"]["error"] == view["error"]
    assert events[1]["metadata"]["actor_id"] == "ops"
    # Reporting again appends nothing: each job is reported once.
    assert worker_jobs.report_finished(store) == 0


def _lock_freed(pool, projection: str, kind: str) -> None:
    """A closed session's locks go when its backend exits: wait for that."""
    from projections.status import lock_held

    def freed() -> bool:
        with pool.connection() as conn:
            return not lock_held(conn, projection, jobs.JOB_LOCK[kind])

    _until(freed, 10, "the closed session's lock to go")


@hsettings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(["request", "claim", "finish", "fail", "crash", "reap"]), min_size=1, max_size=12))
def test_job_lifecycle_property(proj_pool, fresh_database_url, steps):
    """Whatever requests, claims, ends, worker deaths and reaps happen: at most one open job; a
    request is refused exactly while a live one is open; a second claimant gets nothing; every
    ended job is reported by exactly one completion event."""
    import service_layer.operator_events  # noqa: F401 - registers the operator.* types

    store = EventStore(proj_pool)
    with proj_pool.connection() as conn:
        conn.execute("UPDATE projection_job SET state = 'failed' WHERE state IN ('requested', 'running')")
    model: dict = {"state": None, "id": None, "conn": None}  # state: None | requested | running | dead
    ended: list[int] = []
    try:
        for step in steps:
            if step == "request":
                try:
                    model["id"] = worker_jobs.request(store, "replay", "agents", {"from_position": 0},
                                                      actor_id="prop").job.id
                    assert model["state"] in (None, "dead"), step
                    if model["state"] == "dead":  # the request fails the dead worker's job first
                        ended.append(model["dead_id"])
                    model.update(state="requested", conn=None)
                except jobs.JobInProgress:
                    assert model["state"] in ("requested", "running"), step
            elif step == "claim":
                claimant = psycopg.connect(fresh_database_url, autocommit=True, row_factory=psycopg.rows.dict_row)
                if not jobs.try_lock(claimant, "replay", "agents"):
                    assert model["state"] == "running"
                    claimant.close()
                    continue
                job = jobs.claim(claimant, "replay", "agents")
                if model["state"] == "dead":  # the claim fails the dead worker's job first
                    ended.append(model["dead_id"])
                    model["state"] = None
                assert (job is not None) == (model["state"] == "requested"), step
                if job is None:
                    jobs.unlock(claimant, "replay", "agents")
                    claimant.close()
                else:
                    assert job.id == model["id"] and job.state == "running"
                    model.update(state="running", conn=claimant)
            elif step in ("finish", "fail") and model["state"] == "running":
                jobs.finish(model["conn"], model["id"], "done" if step == "finish" else "failed", events_done=1)
                model["conn"].close()
                _lock_freed(proj_pool, "agents", "replay")
                ended.append(model["id"])
                model.update(state=None, conn=None)
            elif step == "crash" and model["state"] == "running":
                model["conn"].close()
                _lock_freed(proj_pool, "agents", "replay")
                model.update(state="dead", conn=None, dead_id=model["id"])
            elif step == "reap":
                with proj_pool.connection() as conn:
                    reaped = jobs.reap_crashed(conn, "agents", "replay")
                assert reaped == ([model["dead_id"]] if model["state"] == "dead" else [])
                if model["state"] == "dead":
                    ended.append(model["dead_id"])
                    model["state"] = None
            with proj_pool.connection() as conn:
                open_jobs = conn.execute("SELECT id, state FROM projection_job WHERE kind = 'replay'"
                                         " AND state IN ('requested', 'running')").fetchall()
            expected = {"requested": "requested", "running": "running", "dead": "running"}.get(model["state"])
            assert [r["state"] for r in open_jobs] == ([expected] if expected else []), (step, open_jobs)
        worker_jobs.report_finished(store)
        assert worker_jobs.report_finished(store) == 0
        with proj_pool.connection() as conn:
            reported = conn.execute(
                "SELECT (payload->'details'->>'job_id')::bigint AS job, count(*) AS n FROM events"
                " WHERE stream_id = 'operator' AND type IN ('operator.projection_replayed',"
                " 'operator.projection_replay_failed') AND (payload->'details'->>'job_id')::bigint = ANY(%s)"
                " GROUP BY 1", (ended,)).fetchall()
        assert {r["job"]: r["n"] for r in reported} == {job_id: 1 for job_id in ended}
    finally:
        if model["conn"] is not None:
            model["conn"].close()


def test_a_job_that_ends_as_it_is_viewed_reads_as_ended_not_crashed(proj_pool, fresh_database_url, monkeypatch):
    """The worker marks the job done, then frees its lock: a view that read 'running' just before
    and finds the lock free reads the job again. A wrapper around the lock check ends the job at
    that moment (a seam in our own code); a job whose worker is gone still reads as crashed."""
    from projections.status import lock_held

    with proj_pool.connection() as conn:
        conn.execute("UPDATE projection_job SET state = 'failed' WHERE state IN ('requested', 'running')")
        job = jobs.open_job(conn, "replay", "agents", {"from_position": 0}, {"actor_id": "ops"})
    worker = psycopg.connect(fresh_database_url, autocommit=True, row_factory=psycopg.rows.dict_row)
    try:
        assert jobs.try_lock(worker, "replay", "agents") and jobs.claim(worker, "replay", "agents").id == job.id

        def worker_ends_the_job_first(conn, name, partition):
            jobs.finish(worker, job.id, "done", events_done=3)
            jobs.unlock(worker, "replay", "agents")
            return lock_held(conn, name, partition)

        monkeypatch.setattr(jobs, "lock_held", worker_ends_the_job_first)
        view = jobs.job_view(proj_pool, job_id=job.id)
        assert view["state"] == "done" and view["done"] == 3
    finally:
        worker.close()
    monkeypatch.undo()
    with proj_pool.connection() as conn:
        dead = jobs.open_job(conn, "replay", "agents", {"from_position": 0}, {"actor_id": "ops"})
        conn.execute("UPDATE projection_job SET state = 'running', started_at = now() WHERE id = %s", (dead.id,))
    assert jobs.job_view(proj_pool, job_id=dead.id)["state"] == "crashed"  # no session holds its lock
