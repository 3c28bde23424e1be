"""Through a real server: commands and reads on chains, documents and agents, undo/redo,
time travel and diff, ETag/If-Match, Idempotency-Key on commands, and min_position waits."""

from __future__ import annotations

import uuid

import pytest

from tests.api.conftest import assert_problem

JSON = {"content-type": "application/json"}


def create_document(client, **fields):
    body = {"namespace": "tests", "type": "session_context", "title": "Doc", "content": "v1", **fields}
    response = client.post("/v1/documents", json=body)
    assert response.status_code == 201, response.text
    return response


def test_document_lifecycle_with_etags_and_read_your_writes(clients):
    writer = clients["writer"]
    session = f"sess-{uuid.uuid4().hex[:8]}"
    created = writer.post("/v1/documents", headers={"X-Session-Id": session},
                          json={"namespace": "tests", "type": "session_context", "title": "Doc", "content": "v1",
                                "metadata": {"agent_type": "planner", "rank": 3}})
    assert created.status_code == 201 and created.headers["etag"] == '"1"'
    doc = created.json()["stream_id"]
    assert created.headers["location"] == f"/v1/documents/{doc}"
    position = int(created.headers["x-chronicle-position"])
    assert created.json()["position"] == position

    got = writer.get(f"/v1/documents/{doc}", params={"min_position": position})
    assert got.status_code == 200 and got.json()["content"] == "v1" and got.headers["etag"] == '"1"'
    assert got.json()["created_by"] == "svc-writer" and got.json()["session_id"] == session

    updated = writer.patch(f"/v1/documents/{doc}", headers={"If-Match": '"1"'},
                           json={"content": "v2", "change_description": "second draft"})
    assert updated.status_code == 200 and updated.headers["etag"] == '"2"'
    stale = writer.patch(f"/v1/documents/{doc}", headers={"If-Match": '"1"'}, json={"content": "lost"})
    body = assert_problem(stale, 412, "precondition_failed", "If-Match")
    assert body["current_stream_version"] == 2 and stale.headers["etag"] == '"2"'
    assert_problem(writer.patch(f"/v1/documents/{doc}", headers={"If-Match": "soon"}, json={"content": "x"}),
                   422, "invalid_if_match", "If-Match")

    tagged = writer.put(f"/v1/documents/{doc}/tags/production", json={"version": 1})
    assert tagged.status_code == 200
    assert_problem(writer.put(f"/v1/documents/{doc}/tags/production", json={"version": 99}), 404, "version_not_found")
    pos = int(tagged.headers["x-chronicle-position"])
    listed = writer.get("/v1/documents", params={"tag": "production", "namespace": "tests", "min_position": pos}).json()
    mine = [d for d in listed["documents"] if d["document_id"] == doc]
    assert mine and mine[0]["content"] == "v1" and mine[0]["document_version"] == 1  # the tagged version
    for params in ({"session": session}, {"metadata.agent_type": "planner", "session": session},
                   {"metadata.rank": "3", "session": session}, {"type": "session_context", "session": session}):
        found = writer.get("/v1/documents", params=params).json()["documents"]
        assert [d["document_id"] for d in found] == [doc], params
    assert writer.get("/v1/documents", params={"metadata.agent_type": "nobody", "session": session}).json()["documents"] == []

    versions = writer.get(f"/v1/documents/{doc}/versions").json()["versions"]
    assert [v["document_version"] for v in versions] == [1, 2] and versions[1]["change_description"] == "second draft"
    assert writer.get(f"/v1/documents/{doc}/versions/1").json()["content"] == "v1"
    assert_problem(writer.get(f"/v1/documents/{doc}/versions/7"), 404, "version_not_found", "version")
    tags = writer.get(f"/v1/documents/{doc}/tags").json()
    assert tags["tags"][0]["tag"] == "production" and tags["history"][0]["operation"] == "tagged"

    untagged = writer.delete(f"/v1/documents/{doc}/tags/production")
    assert untagged.status_code == 200
    deleted = writer.delete(f"/v1/documents/{doc}")
    assert deleted.status_code == 200
    gone = writer.get(f"/v1/documents/{doc}", params={"min_position": deleted.headers["x-chronicle-position"]})
    # A deleted document is gone (410) on reads and commands alike; a missing one is 404 on both.
    assert_problem(gone, 410, "document_deleted", "document_id")
    assert_problem(writer.patch(f"/v1/documents/{doc}", json={"content": "zombie"}), 410, "document_deleted",
                   "document_id")
    assert_problem(writer.put(f"/v1/documents/{doc}/tags/x", json={"document_version": 1}), 410, "document_deleted")
    missing = uuid.uuid4()
    assert_problem(writer.get(f"/v1/documents/{missing}"), 404, "document_not_found", "document_id")
    assert_problem(writer.patch(f"/v1/documents/{missing}", json={"content": "x"}), 404, "document_not_found",
                   "document_id")
    restored = writer.post(f"/v1/documents/{doc}/restore", json={"reason": "oops"})
    assert restored.status_code == 200
    back = writer.get(f"/v1/documents/{doc}", params={"min_position": restored.headers["x-chronicle-position"]})
    assert back.status_code == 200 and back.json()["content"] == "v2"


def test_keyset_pagination_newest_first(clients):
    writer = clients["writer"]
    ns = f"page{uuid.uuid4().hex[:6]}"
    ids = [create_document(writer, namespace=ns, title=f"n{i}").json() for i in range(5)]
    last = max(d["position"] for d in ids)
    seen, cursor = [], None
    while True:
        params = {"namespace": ns, "limit": 2, "min_position": last, **({"cursor": cursor} if cursor else {})}
        page = writer.get("/v1/documents", params=params).json()
        seen += [d["document_id"] for d in page["documents"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == [d["stream_id"] for d in reversed(ids)]


def test_idempotent_command_appends_once(clients):
    writer, auditor = clients["writer"], clients["auditor"]
    key = str(uuid.uuid4())
    body = {"namespace": "tests", "type": "user_feedback", "title": "Once", "content": "x"}
    first = writer.post("/v1/documents", json=body, headers={"Idempotency-Key": key})
    second = writer.post("/v1/documents", json=body, headers={"Idempotency-Key": key})
    assert first.status_code == second.status_code == 201
    assert first.json() == second.json() and second.headers["idempotent-replayed"] == "true"
    assert second.headers["etag"] == first.headers["etag"]
    stream = first.json()["stream_id"]
    events = auditor.get("/v1/events", params={"stream": stream}).json()["events"]
    assert len(events) == 1
    assert events[0]["metadata"]["actor_id"] == "svc-writer" and events[0]["metadata"]["actor_type"] == "service"
    changed = writer.post("/v1/documents", json={**body, "title": "Twice"}, headers={"Idempotency-Key": key})
    assert_problem(changed, 422, "idempotency_key_reused", "Idempotency-Key")


def test_min_position_wait_is_bounded(clients):
    # A position the log never issued is refused at once (the bounded 503 wait for an issued
    # position held back by an open transaction is in tests/reliability/test_long_transaction.py).
    response = clients["reader"].get("/v1/documents", params={"min_position": 10**12})
    body = assert_problem(response, 422, "min_position_not_issued", "min_position")
    assert body["projected_position"] < 10**12
    assert_problem(clients["reader"].get("/v1/documents", params={"min_position": -1}), 422, "validation_error",
                   "min_position")


def test_writes_need_the_writer_role(clients):
    body = {"namespace": "tests", "type": "session_context", "title": "Nope", "content": "x"}
    for role in ("reader", "auditor", "operator"):
        assert_problem(clients[role].post("/v1/documents", json=body), 403, "forbidden")
    assert_problem(clients["anonymous"].post("/v1/documents", json=body), 401, "unauthorized")
    assert clients["admin"].post("/v1/documents", json=body).status_code == 201
    assert_problem(clients["operator"].get("/v1/documents"), 403, "forbidden")


def test_bad_commands_get_problems_never_500(clients):
    writer = clients["writer"]
    assert_problem(writer.post("/v1/documents", json={"namespace": "tests"}), 422, "validation_error", "type")
    assert_problem(writer.post("/v1/documents", json={"namespace": "Bad NS!", "type": "t", "title": "x",
                                                      "content": "c"}), 422)
    assert_problem(writer.post("/v1/documents", json={"namespace": "tests", "type": "t", "title": "\x00bad",
                                                      "content": "c"}), 422)
    assert_problem(writer.patch(f"/v1/documents/{uuid.uuid4()}", json={"content": "x"}), 404)
    assert_problem(writer.patch("/v1/documents/not-a-uuid", json={"content": "x"}), 422, "validation_error",
                   "document_id")
    assert_problem(writer.post("/v1/agents", json={"name": "a", "prompt": "p", "model": "m", "tools": "nope"}),
                   422, "validation_error", "tools")
    assert_problem(writer.post("/v1/chains", json=["not", "an", "object"]), 422, "validation_error")
    doc = create_document(writer).json()["stream_id"]
    assert_problem(writer.post(f"/v1/documents/{doc}/redo"), 409, "nothing_to_redo")
    assert_problem(writer.post(f"/v1/chains/{doc}/undo"), 404, "chain_not_found")  # a document, not a chain
    assert_problem(writer.get(f"/v1/documents/{doc}/history", params={"version": 40}), 404, "version_not_found")
    assert_problem(writer.get(f"/v1/documents/{doc}/history", params={"as_of": "2020-01-01T00:00:00"}), 422,
                   "invalid_query", "as_of")
    assert_problem(writer.get(f"/v1/documents/{doc}/diff", params={"from": 1}), 422, "validation_error", "to")


def test_chain_canvas_nodes_edges(clients):
    writer = clients["writer"]
    chain = writer.post("/v1/chains", json={"name": "pipeline", "metadata": {"team": "a"}}).json()["stream_id"]
    doc = create_document(writer).json()["stream_id"]
    agent = writer.post("/v1/agents", json={"name": "bot", "prompt": "p", "model": "gpt-4o"}).json()["stream_id"]
    canvas = writer.put(f"/v1/chains/{chain}/canvas",
                        json={"canvas_state": {"zoom": 1}, "viewport": {"x": 0, "y": 0}})
    assert canvas.status_code == 200 and canvas.headers["etag"] == '"2"'
    for node, kind, ref in (("n1", "document", doc), ("n2", "agent", agent)):
        assert writer.post(f"/v1/chains/{chain}/nodes", json={"node_id": node, "kind": kind, "ref_id": ref}).status_code == 200
    assert_problem(writer.post(f"/v1/chains/{chain}/edges", json={"source_id": "n1", "target_id": "n1",
                                                                 "type": "document_to_agent"}), 409, "self_edge")
    edge = writer.post(f"/v1/chains/{chain}/edges", json={"edge_id": "e1", "source_id": "n1", "target_id": "n2",
                                                          "type": "document_to_agent"})
    assert edge.status_code == 201, edge.text
    pos = edge.headers["x-chronicle-position"]
    got = writer.get(f"/v1/chains/{chain}", params={"min_position": pos})
    assert got.headers["etag"] == edge.headers["etag"]
    body = got.json()
    assert body["canvas_state"] == {"zoom": 1} and [e["edge_id"] for e in body["edges"]] == ["e1"]
    assert set(body["nodes"]) == {"n1", "n2"}
    assert writer.get(f"/v1/chains/{chain}/edges").json()["edges"][0]["target_id"] == "n2"
    assert writer.get(f"/v1/chains/{chain}/canvas").json()["viewport"] == {"x": 0, "y": 0}
    assert any(c["chain_id"] == chain for c in writer.get("/v1/chains", params={"metadata.team": "a"}).json()["chains"])
    patched = writer.patch(f"/v1/chains/{chain}/edges/e1", json={"type": "feeds"})
    assert patched.status_code == 200
    undone = writer.post(f"/v1/chains/{chain}/undo")
    assert undone.status_code == 200
    after = writer.get(f"/v1/chains/{chain}/edges", params={"min_position": undone.headers["x-chronicle-position"]})
    assert after.json()["edges"][0]["type"] == "document_to_agent"
    deleted = writer.delete(f"/v1/chains/{chain}/edges/e1")
    assert deleted.status_code == 200
    assert writer.get(f"/v1/chains/{chain}/edges",
                      params={"min_position": deleted.headers["x-chronicle-position"]}).json()["edges"] == []
    assert_problem(writer.get(f"/v1/chains/{uuid.uuid4()}"), 404, "chain_not_found", "chain_id")


def test_agent_and_executions(clients):
    writer = clients["writer"]
    created = writer.post("/v1/agents", json={"name": "summariser", "prompt": "sum up", "model": "gpt-4o",
                                              "tools": ["search"], "metadata": {"tier": "gold"}})
    agent = created.json()["stream_id"]
    for i in range(3):
        ran = writer.post(f"/v1/agents/{agent}/executions",
                          json={"input": {"q": i}, "output": {"a": i}, "duration_ms": 10 + i, "tokens": 5})
        assert ran.status_code == 201 and ran.json()["execution_id"]
    pos = ran.headers["x-chronicle-position"]
    executions = writer.get(f"/v1/agents/{agent}/executions", params={"min_position": pos, "limit": 2}).json()
    assert [e["input"]["q"] for e in executions["executions"]] == [2, 1] and executions["next_cursor"]
    rest = writer.get(f"/v1/agents/{agent}/executions", params={"cursor": executions["next_cursor"]}).json()
    assert [e["input"]["q"] for e in rest["executions"]] == [0]
    got = writer.get(f"/v1/agents/{agent}")
    assert got.json()["tools"] == ["search"] and got.headers["etag"] == '"4"'
    assert any(a["agent_id"] == agent for a in writer.get("/v1/agents", params={"metadata.tier": "gold"}).json()["agents"])
    assert_problem(writer.get(f"/v1/agents/{uuid.uuid4()}"), 404, "agent_not_found")


@pytest.mark.parametrize("kind", ["documents", "agents", "chains"])
def test_undo_redo_history_and_diff_on_every_stream(clients, kind):
    writer, reader = clients["writer"], clients["reader"]
    create = {"documents": {"namespace": "tests", "type": "llm_interaction", "title": "A", "content": "one"},
              "agents": {"name": "A", "prompt": "one", "model": "m1"},
              "chains": {"name": "A", "description": "one"}}[kind]
    change = {"documents": {"title": "B"}, "agents": {"name": "B"}, "chains": {"name": "B"}}[kind]
    stream = writer.post(f"/v1/{kind}", json=create).json()["stream_id"]
    assert writer.patch(f"/v1/{kind}/{stream}", json=change).status_code == 200
    undone = writer.post(f"/v1/{kind}/{stream}/undo")
    assert undone.status_code == 200 and undone.json()["stream_version"] == 3
    assert_problem(writer.post(f"/v1/{kind}/{stream}/undo", headers={"If-Match": '"2"'}), 412, "precondition_failed")
    redone = writer.post(f"/v1/{kind}/{stream}/redo", headers={"If-Match": '"3"'})
    assert redone.status_code == 200 and redone.headers["etag"] == '"4"'
    assert_problem(reader.post(f"/v1/{kind}/{stream}/undo"), 403, "forbidden")

    history = reader.get(f"/v1/{kind}/{stream}/history")
    assert history.headers["etag"] == '"4"'
    types = [v["type"] for v in history.json()["versions"]]
    single = kind[:-1]
    assert types == [f"{single}.created", f"{single}.updated", f"{single}.undone", f"{single}.redone"]
    name = "title" if kind == "documents" else "name"
    assert reader.get(f"/v1/{kind}/{stream}/history", params={"version": 1}).json()["state"][name] == "A"
    assert reader.get(f"/v1/{kind}/{stream}/history", params={"version": 3}).json()["state"][name] == "A"
    assert reader.get(f"/v1/{kind}/{stream}/history", params={"version": 4}).json()["state"][name] == "B"
    as_of = history.json()["versions"][1]["timestamp"]
    travelled = reader.get(f"/v1/{kind}/{stream}/history", params={"as_of": as_of}).json()
    assert travelled["stream_version"] == 2 and travelled["state"][name] == "B"
    diff = reader.get(f"/v1/{kind}/{stream}/diff", params={"from": 1, "to": 2}).json()
    assert {"field": name, "change": "changed", "before": "A", "after": "B"} in diff["changes"]
    events = clients["auditor"].get(f"/v1/streams/{stream}/events").json()["events"]
    assert events[2]["metadata"]["actor_id"] == "svc-writer"
