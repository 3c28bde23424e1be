"""The `chronicle` commands, run as subprocesses against a real database."""

from __future__ import annotations

import json
import uuid

from infrastructure.config import Settings
from infrastructure.db import create_pool
from tests.workers.conftest import SHARED_REDIS, WorkerProcess, namespace  # noqa: F401 - a fixture
from tests.support import park_document_event


def test_keys_create_list_revoke(chronicle):
    created = json.loads(chronicle("keys", "create", "billing", "--role", "writer", "--json").stdout)
    assert created["role"] == "writer" and created["token"].startswith(f"chr_{created['key_id']}_")
    listed = json.loads(chronicle("keys", "list", "--json").stdout)
    assert [k["key_id"] for k in listed if k["name"] == "billing"] == [created["key_id"]]
    assert all("token" not in k for k in listed)
    table = chronicle("keys", "list").stdout
    assert created["key_id"] in table and "billing" in table
    assert "revoked" in chronicle("keys", "revoke", created["key_id"]).stdout
    assert json.loads(chronicle("keys", "list", "--json").stdout)[-1]["revoked_at"]
    missing = chronicle("keys", "revoke", "nosuchkey", check=False)
    assert missing.returncode == 1 and "no key" in missing.stderr
    bad = chronicle("keys", "create", "x", "--role", "emperor", check=False)
    assert bad.returncode == 2 and "role" in bad.stderr
    history = json.loads(chronicle("history", "operator", "--json").stdout)
    assert [e["type"] for e in history][-2:] == ["operator.key_created", "operator.key_revoked"]
    assert history[-1]["metadata"]["actor_id"] == "cli-tester"


def test_history_table_and_json(chronicle, cli_database_url):
    from domain import commands as c
    from service_layer.workspace import Workspace

    app = Workspace({"PERSISTENCE_MODULE": "infrastructure.persistence", "DATABASE_URL": cli_database_url})
    try:
        result = app.handle(c.CreateDocument(namespace="cli", document_type="session_context", title="Hi",
                                             content="one"), c.CommandContext(actor_id="alice", actor_type="user"))
        app.handle(c.UpdateDocument(document_id=uuid.UUID(result.stream_id), content="two"),
                   c.CommandContext(actor_id="alice", actor_type="user"))
    finally:
        app.close()
    events = json.loads(chronicle("history", result.stream_id, "--json").stdout)
    assert [e["type"] for e in events] == ["document.created", "document.updated"]
    table = chronicle("history", result.stream_id).stdout
    assert "document.created" in table and "user:alice" in table
    missing = chronicle("history", "nope", check=False)
    assert missing.returncode == 1 and "no stream" in missing.stderr


def _create_document(database_url: str) -> str:
    """One document.created event through the application service; the document's stream id."""
    from domain import commands as c
    from service_layer.workspace import Workspace

    app = Workspace({"PERSISTENCE_MODULE": "infrastructure.persistence", "DATABASE_URL": database_url})
    try:
        return app.handle(c.CreateDocument(namespace="cli", document_type="note", title="Parked", content="x"),
                          c.CommandContext(actor_id="alice", actor_type="user")).stream_id
    finally:
        app.close()


def test_projections_status_rebuild_replay_and_dead_letters(chronicle, cli_database_url, namespace):
    _create_document(cli_database_url)  # a document event of its own to park, whatever ran before
    status = json.loads(chronicle("projections", "status", "--json").stdout)
    assert isinstance(status, list)
    # A worker on Redis runs what the commands queue; the commands wake it (the tick is off).
    worker = WorkerProcess(cli_database_url, SHARED_REDIS, namespace)
    worker.env["CHRONICLE_TICK_SECONDS"] = "0"
    redis = {"REDIS_URL": SHARED_REDIS, "CHRONICLE_BROKER_NAMESPACE": namespace}
    worker.start()
    try:
        rebuilt = chronicle("projections", "rebuild", "documents", **redis)
        assert "rebuilt documents" in rebuilt.stdout and "requested rebuild of documents" in rebuilt.stderr
        assert "no worker" not in rebuilt.stderr
        status = json.loads(chronicle("projections", "status", "--json").stdout)
        assert {s["projection"] for s in status} >= {"documents"}
        assert all(s["lag_events"] == 0 for s in status if s["projection"] == "documents")
        replayed = chronicle("projections", "replay", "all", "--from", "0", **redis)
        assert "replayed documents from position 0" in replayed.stdout
    finally:
        worker.stop()
    unknown = chronicle("projections", "rebuild", "nope", check=False)
    assert unknown.returncode == 2 and "no projection" in unknown.stderr

    assert json.loads(chronicle("dead-letters", "list", "--json").stdout) == []
    pool = create_pool(cli_database_url, Settings(chronicle_pool_min_size=1, chronicle_pool_max_size=1))
    try:
        with pool.connection() as conn:
            dead_id, event = park_document_event(conn, newest=False, attempts=0)
    finally:
        pool.close()
    listed = json.loads(chronicle("dead-letters", "list", "--json").stdout)
    assert [d["id"] for d in listed] == [dead_id]
    assert "boom" in chronicle("dead-letters", "list").stdout
    retried = chronicle("dead-letters", "retry", str(dead_id))
    assert event["stream_id"] in retried.stdout
    assert json.loads(chronicle("dead-letters", "list", "--json").stdout) == []
    assert chronicle("dead-letters", "skip", str(dead_id), check=False).returncode == 1
    types = [e["type"] for e in json.loads(chronicle("history", "operator", "--json").stdout)]
    assert {"operator.projection_rebuilt", "operator.projection_replayed", "operator.dead_letter_retried"} <= set(types)


def test_rebuild_with_no_worker_is_queued_and_says_so(chronicle, cli_database_url):
    queued = chronicle("projections", "rebuild", "agents", "--no-wait")
    assert "requested rebuild of agents" in queued.stderr and "rebuilt" not in queued.stdout
    again = chronicle("projections", "rebuild", "agents", "--no-wait", check=False)
    assert again.returncode == 1 and "already requested or running" in again.stderr
    waited = chronicle("projections", "rebuild", "chains", "--timeout", "8", check=False)
    assert waited.returncode == 3, waited.stderr
    assert "no worker has picked up job" in waited.stderr and "still requested" in waited.stderr
    pool = create_pool(cli_database_url, Settings(chronicle_pool_min_size=1, chronicle_pool_max_size=1))
    try:
        with pool.connection() as conn:
            rows = conn.execute("SELECT projection, state, requested_by->>'actor_id' AS actor FROM projection_job"
                                " WHERE kind = 'rebuild' AND projection IN ('agents', 'chains')").fetchall()
    finally:
        pool.close()
    assert sorted((r["projection"], r["state"], r["actor"]) for r in rows) == [
        ("agents", "requested", "cli-tester"), ("chains", "requested", "cli-tester")]
    types = [e["type"] for e in json.loads(chronicle("history", "operator", "--json").stdout)]
    assert types.count("operator.projection_rebuild_requested") >= 2


def test_migrate_and_status(chronicle):
    assert "up to date" in chronicle("migrate").stdout
    report = json.loads(chronicle("status", "--json").stdout)
    assert report["pending_migrations"] == []


def test_migrate_records_every_registered_event_type(chronicle, cli_database_url):
    import domain.session  # noqa: F401 - registers document.accessed
    import service_layer.operator_events  # noqa: F401 - registers the operator.* types
    import service_layer.workspace  # noqa: F401 - registers the domain's types
    import domain.session  # noqa: F401 - registers document.accessed
    from domain.event_types import registry

    chronicle("migrate")
    pool = create_pool(cli_database_url, Settings(chronicle_pool_min_size=1, chronicle_pool_max_size=1))
    try:
        with pool.connection() as conn:
            rows = conn.execute("SELECT type, schema_version, json_schema FROM event_definitions").fetchall()
    finally:
        pool.close()
    stored = {row["type"]: row for row in rows}
    assert set(stored) == {t.name for t in registry}
    assert {"document.tagged", "chain.node_added", "agent.executed", "operator.key_created"} <= set(stored)
    assert "tag" in stored["document.tagged"]["json_schema"]["properties"]
