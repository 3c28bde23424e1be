"""Through a real server: POST /v1/projections/{name}/verify finds rows corrupted by hand, is
recorded as an operator event, needs the operator role, and names an unknown projection."""

from __future__ import annotations

import uuid

from psycopg.types.json import Jsonb

from tests.api.conftest import assert_problem


def _mine(body: dict, ids: set[str]) -> set[tuple]:
    """The differences of rows belonging to `ids`, as (table, key, kind, columns)."""
    return {(d["table"], tuple(sorted(d["key"].items())), d["kind"], tuple(d["columns"]))
            for d in body["differences"] if d["stream_id"] in ids}


def test_verify_reports_corrupted_rows(clients, api_pool):
    operator, writer = clients["operator"], clients["writer"]
    made = writer.post("/v1/documents", json={"namespace": "verify", "type": "session_context", "title": "t",
                                              "content": "c"})
    doc, position = made.json()["stream_id"], made.json()["position"]
    assert writer.get(f"/v1/documents/{doc}", params={"min_position": position}).status_code == 200
    before = {name: operator.post(f"/v1/projections/{name}/verify") for name in ("documents", "agents")}
    for response in before.values():
        assert response.status_code == 200, response.text
        body = response.json()
        assert {"projection", "position", "differing_rows", "differences"} <= set(body)
        assert body["position"] >= 1 and len(body["differences"]) <= 100
    assert _mine(before["documents"].json(), {doc}) == set()
    ghost = f"ghost-{uuid.uuid4().hex[:8]}"
    with api_pool.connection() as conn:
        conn.execute("UPDATE document SET title = 'tampered' WHERE document_id = %s", (doc,))
        saved = conn.execute("DELETE FROM document_version v WHERE document_id = %s AND version = 1"
                             " RETURNING to_jsonb(v) AS row", (doc,)).fetchone()["row"]
        conn.execute("INSERT INTO agent (agent_id, name, last_event_id, last_version, last_position)"
                     " VALUES (%s, 'g', gen_random_uuid(), 1, 1)", (ghost,))
    try:
        documents = operator.post("/v1/projections/documents/verify")
        assert documents.status_code == 200, documents.text
        assert _mine(documents.json(), {doc}) == {
            ("document", (("document_id", doc),), "changed", ("title",)),
            ("document_version", (("document_id", doc), ("version", 1)), "missing", ()),
        }
        assert documents.json()["differing_rows"] == before["documents"].json()["differing_rows"] + 2
        agents = operator.post("/v1/projections/agents/verify").json()
        assert _mine(agents, {ghost}) == {("agent", (("agent_id", ghost),), "extra", ())}
        recorded = int(documents.headers["x-chronicle-position"])
    finally:
        with api_pool.connection() as conn:
            conn.execute("UPDATE document SET title = 't' WHERE document_id = %s", (doc,))
            conn.execute("INSERT INTO document_version SELECT * FROM jsonb_populate_record(NULL::document_version, %s)",
                         (Jsonb(saved),))
            conn.execute("DELETE FROM agent WHERE agent_id = %s", (ghost,))
    after = operator.post("/v1/projections/documents/verify").json()
    assert _mine(after, {doc}) == set()
    events = clients["auditor"].get("/v1/events", params={"type": "operator.projection_verified"}).json()["events"]
    mine = [e for e in events if e["position"] == recorded]
    assert mine and mine[0]["payload"]["target"] == "projection:documents"
    assert mine[0]["payload"]["details"]["differing_rows"] == documents.json()["differing_rows"]
    assert mine[0]["metadata"]["actor_id"] == "svc-operator"


def test_verify_needs_the_operator_role_and_a_known_projection(clients):
    for role in ("reader", "writer", "auditor"):
        assert_problem(clients[role].post("/v1/projections/documents/verify"), 403, "forbidden")
    assert_problem(clients["anonymous"].post("/v1/projections/documents/verify"), 401, "unauthorized")
    missing = assert_problem(clients["operator"].post("/v1/projections/nope/verify"), 404, "projection_not_found",
                             "name")
    assert "nope" in missing["detail"]
    assert_problem(clients["operator"].post("/v1/projections/No-Such/verify"), 422, "validation_error", "name")
    assert clients["admin"].post("/v1/projections/chains/verify").status_code == 200
