"""Through a real server: projection status, rebuild with progress, replay, dead letters,
and the operator events that record each action."""

from __future__ import annotations

import subprocess
import time

from tests.api.conftest import CHRONICLE, ROOT, assert_problem, chronicle_env
from tests.support import park_document_event


def test_projection_status_rebuild_and_replay(clients):
    operator, auditor = clients["operator"], clients["auditor"]
    writer = clients["writer"]
    made = writer.post("/v1/documents", json={"namespace": "ops", "type": "session_context", "title": "t",
                                              "content": "c"})
    writer.get(f"/v1/documents/{made.json()['stream_id']}", params={"min_position": made.json()["position"]})
    status = operator.get("/v1/projections").json()["projections"]
    assert {p["name"] for p in status} == {"chains", "documents", "agents"}
    documents = next(p for p in status if p["name"] == "documents")
    assert documents["partitions"] and all(p["state"] in ("running", "stalled") for p in documents["partitions"])

    started = operator.post("/v1/projections/documents/rebuild")
    assert started.status_code == 202 and started.headers["location"] == "/v1/projections/documents/rebuild"
    assert started.json()["state"] == "requested" and started.json()["job_id"] >= 1
    progress = _until_finished(operator, started.headers["location"])
    assert progress["state"] == "done" and progress["done"] == progress["total"] >= 1
    assert progress["job_id"] == started.json()["job_id"]
    assert progress["job"]["requested_by"]["actor_id"] == "svc-operator"
    # Reads still answer, from the swapped-in tables.
    assert writer.get(f"/v1/documents/{made.json()['stream_id']}").status_code == 200

    replayed = operator.post("/v1/projections/agents/replay", json={"from_position": 0})
    assert replayed.status_code == 202 and replayed.json()["from_position"] == 0
    assert _until_finished(operator, replayed.headers["location"])["state"] == "done"
    assert_problem(operator.post("/v1/projections/nope/replay", json={"from_position": 0}), 404,
                   "projection_not_found", "name")
    assert_problem(operator.post("/v1/projections/agents/replay", json={"from_position": -5}), 422,
                   "validation_error", "from_position")
    assert_problem(operator.get("/v1/projections/nope/rebuild"), 404, "projection_not_found")

    types = ["operator.projection_rebuild_requested", "operator.projection_rebuilt",
             "operator.projection_replay_requested", "operator.projection_replayed"]
    wanted = {("operator.projection_rebuild_requested", "projection:documents", "svc-operator"),
              ("operator.projection_rebuilt", "projection:documents", "svc-operator"),
              ("operator.projection_replay_requested", "projection:agents", "svc-operator"),
              ("operator.projection_replayed", "projection:agents", "svc-operator")}
    deadline = time.monotonic() + 10  # the worker appends a completion event just after its job ends
    while True:
        events = auditor.get("/v1/events", params={"stream_type": "operator", "type": types})
        kinds = {(e["type"], e["payload"]["target"], e["metadata"]["actor_id"]) for e in events.json()["events"]}
        if wanted <= kinds or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert wanted <= kinds


def _until_finished(client, location: str, timeout: float = 30) -> dict:
    """GET a job's progress until it is done, failed or crashed."""
    deadline = time.monotonic() + timeout
    while True:
        progress = client.get(location).json()
        if progress["state"] in ("done", "failed", "crashed") or time.monotonic() > deadline:
            return progress
        time.sleep(0.1)


def test_cli_rebuild_is_run_by_the_in_process_workers(server, api_database_url, clients):
    """`chronicle up` has no Redis: no message from the CLI reaches its workers; their tick finds the job."""
    result = subprocess.run(
        [CHRONICLE, "projections", "rebuild", "chains"], cwd=ROOT, capture_output=True, text=True, timeout=120,
        env=chronicle_env(DATABASE_URL=api_database_url, CHRONICLE_ACTOR="cli-ops", COLUMNS="200"))
    assert result.returncode == 0, result.stderr
    assert "rebuilt chains" in result.stdout and "requested rebuild of chains" in result.stderr
    progress = clients["operator"].get("/v1/projections/chains/rebuild").json()
    assert progress["state"] == "done" and progress["job"]["requested_by"]["actor_id"] == "cli-ops"
    deadline = time.monotonic() + 10  # the worker appends the completion event just after the swap
    while True:
        events = clients["auditor"].get("/v1/events", params={"type": "operator.projection_rebuilt"}).json()["events"]
        reported = [e for e in events if e["payload"]["details"]["job_id"] == progress["job_id"]]
        if reported or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert [e["metadata"]["actor_id"] for e in reported] == ["cli-ops"]


def test_dead_letters_routes(clients, api_pool):
    operator = clients["operator"]
    assert operator.get("/v1/dead-letters").json() == {"dead_letters": []}
    assert_problem(operator.post("/v1/dead-letters/999999/retry"), 404, "dead_letter_not_found", "dead_letter_id")
    assert_problem(operator.post("/v1/dead-letters/999999/skip"), 404, "dead_letter_not_found")
    assert_problem(operator.post("/v1/dead-letters/0/skip"), 422, "validation_error", "dead_letter_id")
    # A parked event (as the engine parks one) can be skipped; the skip is recorded.
    with api_pool.connection() as conn:
        dead_id, _ = park_document_event(conn, newest=True)
    listed = operator.get("/v1/dead-letters", params={"projection": "documents"}).json()["dead_letters"]
    assert [d["id"] for d in listed] == [dead_id] and listed[0]["error"] == "boom"
    skipped = operator.post(f"/v1/dead-letters/{dead_id}/skip")
    assert skipped.status_code == 200, skipped.text
    assert_problem(operator.post(f"/v1/dead-letters/{dead_id}/retry"), 409, "dead_letter_resolved")
    assert operator.get("/v1/dead-letters").json() == {"dead_letters": []}
    events = clients["auditor"].get("/v1/events", params={"type": "operator.dead_letter_skipped"}).json()["events"]
    assert events[-1]["payload"]["target"] == f"dead_letter:{dead_id}"


def test_operations_need_the_operator_role(clients):
    for role in ("reader", "writer", "auditor"):
        assert_problem(clients[role].get("/v1/projections"), 403, "forbidden")
        assert_problem(clients[role].post("/v1/projections/documents/rebuild"), 403, "forbidden")
        assert_problem(clients[role].get("/v1/dead-letters"), 403, "forbidden")
    assert_problem(clients["anonymous"].get("/v1/projections"), 401, "unauthorized")
    assert clients["admin"].get("/v1/projections").status_code == 200
