"""JSON logs: a request's correlation and causation ids reach its log line, its events' metadata,
and the worker's log of projecting them, in-process (`chronicle up`) and in `chronicle worker`."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from tests.conftest import migrated_database
from tests.observability.conftest import (
    Process,
    chronicle_env,
    free_port,
    json_lines,
    start,
    stop,
    wait_for,
)
from tests.support import forget_redis_keys

DOC = {"namespace": "observed", "type": "session_context", "title": "Doc", "content": "v1"}
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")


def _request_line(log: Path, correlation_id: str) -> dict | None:
    return next((line for line in json_lines(log) if line.get("event") == "http request"
                 and line.get("correlation_id") == correlation_id), None)


def _batch_line(log: Path, correlation_id: str) -> dict | None:
    return next((line for line in json_lines(log) if correlation_id in (line.get("correlation_ids") or ())), None)


def test_correlation_id_goes_from_request_to_event_to_worker_log(api_process: Process, clients):
    correlation_id = f"obs-{uuid.uuid4().hex}"
    created = clients["writer"].post("/v1/documents", json=DOC,
                                     headers={"X-Correlation-Id": correlation_id, "X-Causation-Id": "cause-1"})
    assert created.status_code == 201
    assert created.headers["x-correlation-id"] == correlation_id
    stream = created.json()["stream_id"]
    events = clients["auditor"].get(f"/v1/streams/{stream}/events").json()["events"]
    assert [e["metadata"]["correlation_id"] for e in events] == [correlation_id]
    assert events[0]["metadata"]["causation_id"] == "cause-1"

    request = wait_for(lambda: _request_line(api_process.log, correlation_id), what="the request's log line")
    assert request["path"] == "/v1/documents" and request["method"] == "POST" and request["status"] == 201
    assert request["causation_id"] == "cause-1" and request["actor_id"] == "svc-writer"
    assert request["level"] == "info" and request["logger"] == "chronicle.http" and "timestamp" in request

    batch = wait_for(lambda: _batch_line(api_process.log, correlation_id), what="the worker's batch log line")
    assert batch["projection"] == "documents" and "cause-1" in batch["causation_ids"]
    assert batch["logger"] == "projections.engine" and batch["events"] >= 1


def test_a_missing_correlation_id_is_made_echoed_and_recorded(clients):
    created = clients["writer"].post("/v1/documents", json=DOC)
    assert created.status_code == 201
    correlation_id = created.headers["x-correlation-id"]
    assert uuid.UUID(correlation_id) and created.json()["correlation_id"] == correlation_id
    events = clients["auditor"].get(f"/v1/streams/{created.json()['stream_id']}/events").json()["events"]
    assert events[0]["metadata"]["correlation_id"] == correlation_id
    # Every response echoes one, errors and unauthenticated requests too.
    refused = clients["anonymous"].get("/v1/documents", headers={"X-Correlation-Id": "probe-1"})
    assert refused.status_code == 401 and refused.headers["x-correlation-id"] == "probe-1"


def test_every_log_line_of_the_api_is_json(api_process: Process, clients):
    assert clients["reader"].get("/healthz").status_code == 200
    lines = json_lines(api_process.log)
    assert lines and all({"event", "level", "logger", "timestamp"} <= set(line) for line in lines)


# -- `chronicle serve` and `chronicle worker` on Redis ------------------------------------------

@pytest.fixture(scope="module")
def redis_deployment(admin_url: str, template_dbname: str, tmp_path_factory) -> Iterator[dict]:
    """`chronicle serve` and a `chronicle worker` process on Redis, on a database of their own."""
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except redis.RedisError:
        pytest.skip(f"no Redis at {REDIS_URL}")
    with migrated_database(admin_url, template_dbname) as url:
        folder = tmp_path_factory.mktemp("redis-deployment")
        namespace = f"chronicle-obs-{uuid.uuid4().hex[:8]}"
        prom_port = free_port()
        env = chronicle_env(
            DATABASE_URL=url, REDIS_URL=REDIS_URL, CHRONICLE_BROKER_NAMESPACE=namespace,
            CHRONICLE_LOG_FORMAT="json", CHRONICLE_LOG_LEVEL="info", CHRONICLE_TICK_SECONDS="1",
            dramatiq_prom_db=str(folder / "prom"), dramatiq_prom_port=str(prom_port), dramatiq_prom_host="127.0.0.1",
        )
        os.makedirs(folder / "prom")
        port = free_port()
        processes: list[Process] = []
        try:
            processes.append(start(["worker", "--processes", "2", "--threads", "2"], env, folder / "worker.log"))
            processes.append(start(["serve", "--port", str(port)], env, folder / "serve.log",
                                   base=f"http://127.0.0.1:{port}"))
            from infrastructure.config import Settings
            from infrastructure.db import create_pool
            from service_layer.keys import create_key

            pool = create_pool(url, Settings(chronicle_pool_min_size=1, chronicle_pool_max_size=1), name="obs-tests")
            try:
                token = create_key(pool, "obs-writer", "writer", actor_id="svc-obs")[1]
            finally:
                pool.close()
            yield {"api": processes[1], "worker": processes[0], "token": token, "prom_port": prom_port,
                   "prom_db": folder / "prom"}
        finally:
            for process in reversed(processes):
                stop(process.proc)
            forget_redis_keys(REDIS_URL, namespace)


def test_worker_process_logs_the_correlation_id_in_json(redis_deployment):
    api, worker = redis_deployment["api"], redis_deployment["worker"]
    correlation_id = f"obs-redis-{uuid.uuid4().hex}"
    created = httpx.post(f"{api.base}/v1/documents", json=DOC, timeout=30, headers={
        "Authorization": f"Bearer {redis_deployment['token']}", "X-Correlation-Id": correlation_id})
    assert created.status_code == 201 and created.headers["x-correlation-id"] == correlation_id

    assert wait_for(lambda: _request_line(api.log, correlation_id), what="the API's request line")
    batch = wait_for(lambda: _batch_line(worker.log, correlation_id), timeout=30, what="the worker's batch line")
    assert batch["projection"] == "documents" and batch["level"] == "info"
    # Bound by the worker middleware for the message being processed: the wake-up's, or the
    # periodic tick's when the tick happened to reach the event first.
    assert batch["actor"] in {"catch_up_partition", "catch_up_projection"} and batch["message_id"]
    # dramatiq's own logs (the stdlib bridge) come out as JSON lines too.
    lines = json_lines(worker.log)
    assert any(line["logger"].startswith("dramatiq") for line in lines)


def test_worker_processes_expose_dramatiq_metrics(redis_deployment):
    """dramatiq's exposition server sums the metrics of every worker process."""
    url = f"http://127.0.0.1:{redis_deployment['prom_port']}/metrics"

    def processed() -> float:
        try:
            text = httpx.get(url, timeout=5).text
        except httpx.HTTPError:
            return 0
        from prometheus_client.parser import text_string_to_metric_families

        return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
                   if s.name == "dramatiq_messages_total" and s.labels.get("actor_name") == "catch_up_partition")

    assert wait_for(processed, timeout=30, what="dramatiq_messages_total from the worker processes") > 0
    assert any(redis_deployment["prom_db"].glob("*.db")), "worker processes write their metric files"
