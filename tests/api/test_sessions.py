"""Through a real server: the session read (GET /v1/sessions/{id}/documents) against the domain's
state, its document.accessed record, and repeatable filters on /v1/documents and /v1/events."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from service_layer.workspace import Workspace
from tests.api.conftest import assert_problem, chronicle_env, free_port, running_chronicle
from tests.conftest import as_owner

TYPES = ("brief", "notes", "plan")


@pytest.fixture(scope="module")
def workspace(api_database_url: str) -> Iterator[Workspace]:
    """The application service on the API server's database: its commands are what the server projects."""
    app = Workspace(env={"PERSISTENCE_MODULE": "infrastructure.persistence", "DATABASE_URL": api_database_url,
                         "CHRONICLE_POOL_MIN_SIZE": "1", "CHRONICLE_POOL_MAX_SIZE": "2"})
    yield app
    app.close()


def read_all(client: httpx.Client, session: str, types: list[str], include_body: bool, position: int,
             limit: int) -> list[dict]:
    """Every page of a session read, following the cursor."""
    documents: list[dict] = []
    cursor = None
    while True:
        params: dict = {"type": types, "include_body": str(include_body).lower(), "limit": limit,
                        "min_position": position}
        if cursor:
            params["cursor"] = cursor
        page = client.get(f"/v1/sessions/{session}/documents", params=params)
        assert page.status_code == 200, page.text
        assert page.headers["x-chronicle-access-recorded"] == "true"
        documents += page.json()["documents"]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            return documents


ops = st.lists(st.tuples(st.sampled_from(["create", "update", "tag", "untag", "delete", "restore"]),
                         st.integers(0, 4), st.integers(0, 2), st.integers(0, 2)), min_size=1, max_size=14)


def command(client: httpx.Client, kind: str, docs: list[str], d: int, s: str, t: int, run: str) -> httpx.Response:
    """One document command in session `s`, through the API."""
    headers = {"X-Session-Id": s}
    if kind == "create" or not docs:
        return client.post("/v1/documents", headers=headers, json={
            "namespace": f"prop{run}", "type": TYPES[t], "title": f"d{len(docs)}", "content": f"c{d}"})
    doc = docs[d % len(docs)]
    if kind == "update":
        return client.patch(f"/v1/documents/{doc}", headers=headers, json={"content": f"u{d}{t}", "title": f"t{t}"})
    if kind == "tag":
        return client.put(f"/v1/documents/{doc}/tags/t{t}", headers=headers, json={"document_version": 1})
    if kind == "untag":
        return client.delete(f"/v1/documents/{doc}/tags/t{t}", headers=headers)
    if kind == "delete":
        return client.delete(f"/v1/documents/{doc}", headers=headers)
    return client.post(f"/v1/documents/{doc}/restore", headers=headers)


@hsettings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=ops, types=st.sets(st.sampled_from(TYPES)), include_body=st.booleans(), limit=st.integers(1, 3))
def test_session_read_equals_the_domain(clients, workspace, steps, types, include_body, limit):
    """For any sessions of creates, updates, tags, deletes and restores, a session read is exactly
    the live documents touched in it (Workspace.get says which live, their type and content; the
    commands' sessions and positions say which touched, and when last), filtered by type, most
    recently touched first; paging through with the cursor yields each document once."""
    run = uuid.uuid4().hex[:8]
    sessions = [f"prop-{run}-{k}" for k in range(3)]
    docs: list[str] = []
    touched: dict[tuple[str, str], int] = {}  # (session, document) -> position of its last event there
    last = 0
    for kind, d, s, t in steps:
        response = command(clients["writer"], kind, docs, d, sessions[s], t, run)
        if response.status_code >= 400:
            assert response.status_code < 500, response.text
            continue  # refused (deleted, not tagged, ...): nothing appended
        result = response.json()
        if response.status_code == 201:
            docs.append(result["stream_id"])
        if result["appended"]:
            touched[(sessions[s], result["stream_id"])] = result["position"]
            last = max(last, result["position"])
    states = {doc: workspace.get(doc).state for doc in docs}
    for session in sessions:
        expected = sorted(
            ((pos, doc) for (s, doc), pos in touched.items()
             if s == session and not states[doc]["deleted"] and (not types or states[doc]["document_type"] in types)),
            reverse=True)
        got = read_all(clients["reader"], session, sorted(types), include_body, last, limit)
        assert [(g["touched_position"], g["document_id"]) for g in got] == expected
        assert len({g["document_id"] for g in got}) == len(got)  # paging yields each document once
        for g in got:
            state = states[g["document_id"]]
            assert (g["type"], g["title"], g["document_version"], g["namespace"]) == (
                state["document_type"], state["title"], state["version"], state["namespace"])
            if include_body:
                assert g["content"] == state["content"]
            else:
                assert "content" not in g and "body" not in g


def accessed_events(client: httpx.Client, session: str) -> list[dict]:
    """The session's document.accessed events, as an auditor finds them."""
    response = client.get("/v1/events", params={"session": session, "type": "document.accessed"})
    assert response.status_code == 200, response.text
    return response.json()["events"]


def create(client: httpx.Client, session: str, doc_type: str, namespace: str = "sessions") -> dict:
    response = client.post("/v1/documents", headers={"X-Session-Id": session},
                           json={"namespace": namespace, "type": doc_type, "title": doc_type, "content": "x"})
    assert response.status_code == 201, response.text
    return response.json()


def test_every_read_leaves_one_accessed_event(clients):
    session = f"acc-{uuid.uuid4().hex[:8]}"
    made = [create(clients["writer"], session, t) for t in ("brief", "notes", "plan")]
    position = max(m["position"] for m in made)
    trace = f"trace-{uuid.uuid4().hex[:8]}"
    read = clients["reader"].get(f"/v1/sessions/{session}/documents", headers={"X-Correlation-Id": trace},
                                 params={"type": ["brief", "notes"], "include_body": "false", "min_position": position})
    assert read.status_code == 200 and read.headers["x-chronicle-access-recorded"] == "true"
    ids = [d["document_id"] for d in read.json()["documents"]]
    assert set(ids) == {made[0]["stream_id"], made[1]["stream_id"]}
    events = accessed_events(clients["auditor"], session)
    assert len(events) == 1
    event = events[0]
    assert event["stream_id"] == f"session:{session}" and event["stream_type"] == "session"
    assert event["position"] == int(read.headers["x-chronicle-access-position"])
    assert event["payload"]["document_count"] == 2 and event["payload"]["document_ids"] == ids
    assert event["payload"]["types"] == ["brief", "notes"] and event["payload"]["include_body"] is False
    assert event["payload"]["trace_id"] == trace and event["metadata"]["correlation_id"] == trace
    assert event["payload"]["actor_id"] == "svc-reader" and event["metadata"]["session_id"] == session
    # A second read (an empty one too) is a second event, and only one more.
    clients["reader"].get(f"/v1/sessions/{session}/documents", params={"type": "nothing"})
    events = accessed_events(clients["auditor"], session)
    assert len(events) == 2 and events[1]["payload"]["document_count"] == 0 and events[1]["payload"]["types"] == ["nothing"]


def test_a_failure_to_record_still_answers_the_read(clients, api_database_url):
    import psycopg

    session = f"fail-{uuid.uuid4().hex[:8]}"
    made = create(clients["writer"], session, "brief")
    owner = as_owner(api_database_url)  # only the owner may put a trigger on events
    with psycopg.connect(owner, autocommit=True) as conn:
        conn.execute("CREATE FUNCTION refuse_accessed() RETURNS trigger LANGUAGE plpgsql AS $$"
                     " BEGIN IF NEW.type = 'document.accessed' THEN RAISE EXCEPTION 'no room for reads'; END IF;"
                     " RETURN NEW; END $$")
        conn.execute("CREATE TRIGGER refuse_accessed BEFORE INSERT ON events FOR EACH ROW"
                     " EXECUTE FUNCTION refuse_accessed()")
    try:
        read = clients["reader"].get(f"/v1/sessions/{session}/documents", params={"min_position": made["position"]})
    finally:
        with psycopg.connect(owner, autocommit=True) as conn:
            conn.execute("DROP TRIGGER refuse_accessed ON events")
            conn.execute("DROP FUNCTION refuse_accessed()")
    assert read.status_code == 200, read.text
    assert [d["document_id"] for d in read.json()["documents"]] == [made["stream_id"]]
    assert read.headers["x-chronicle-access-recorded"] == "false"
    assert "no room for reads" in read.headers["x-chronicle-access-not-recorded-reason"]
    assert accessed_events(clients["auditor"], session) == []


def test_recording_off_appends_nothing(api_database_url, tokens, tmp_path):
    env = chronicle_env(DATABASE_URL=api_database_url, CHRONICLE_RECORD_ACCESS="false",
                        CHRONICLE_DATA_DIR=str(tmp_path / "data"), CHRONICLE_TICK_SECONDS="0")
    with running_chronicle(env, tmp_path / "server.log", free_port()) as base:
        with httpx.Client(base_url=base, timeout=30) as client:
            def as_role(role: str) -> dict:
                return {"Authorization": f"Bearer {tokens[role]}"}
            session = f"off-{uuid.uuid4().hex[:8]}"
            made = client.post("/v1/documents", headers={**as_role("writer"), "X-Session-Id": session},
                               json={"namespace": "sessions", "type": "brief", "title": "t", "content": "x"}).json()
            read = client.get(f"/v1/sessions/{session}/documents", headers=as_role("reader"),
                              params={"min_position": made["position"]})
            assert read.status_code == 200 and len(read.json()["documents"]) == 1
            assert read.headers["x-chronicle-access-recorded"] == "false"
            time.sleep(0.2)
            events = client.get("/v1/events", headers=as_role("auditor"),
                                params={"session": session, "type": "document.accessed"}).json()["events"]
            assert events == []


def test_session_read_bad_input_and_roles(clients):
    assert_problem(clients["anonymous"].get("/v1/sessions/s1/documents"), 401)
    assert_problem(clients["reader"].get("/v1/sessions/s1/documents", params={"type": ["a", "Not A Type"]}), 422,
                   "validation_error", "type")
    assert_problem(clients["reader"].get("/v1/sessions/s1/documents", params={"include_body": "maybe"}), 422)
    assert_problem(clients["reader"].get("/v1/sessions/s1/documents", params={"cursor": "!!"}), 422,
                   "invalid_cursor", "cursor")
    assert_problem(clients["reader"].get("/v1/sessions/s1/documents", params={"sort": "x"}), 422,
                   "unknown_query_parameter")


def test_deleted_documents_drop_out_and_come_back(clients):
    writer, session = clients["writer"], f"del-{uuid.uuid4().hex[:8]}"
    doc = create(writer, session, "brief")["stream_id"]
    gone = writer.delete(f"/v1/documents/{doc}")
    assert gone.status_code == 200, gone.text
    read = clients["reader"].get(f"/v1/sessions/{session}/documents",
                                 params={"min_position": gone.json()["position"]}).json()
    assert read["documents"] == []
    back = writer.post(f"/v1/documents/{doc}/restore")
    assert back.status_code == 200, back.text
    read = clients["reader"].get(f"/v1/sessions/{session}/documents",
                                 params={"min_position": back.json()["position"]}).json()
    assert [d["document_id"] for d in read["documents"]] == [doc]


def test_repeated_filters_on_documents(clients):
    writer, session = clients["writer"], f"multi-{uuid.uuid4().hex[:8]}"
    ns = [f"m{uuid.uuid4().hex[:6]}" for _ in range(3)]
    made = {(n, t): create(writer, session, t, n)["stream_id"] for n in ns for t in ("a", "b", "c")}
    last = writer.put(f"/v1/documents/{made[(ns[0], 'a')]}/tags/gold", json={"document_version": 1})
    last = writer.put(f"/v1/documents/{made[(ns[0], 'a')]}/tags/silver", json={"document_version": 1})
    last = writer.put(f"/v1/documents/{made[(ns[1], 'b')]}/tags/silver", json={"document_version": 1})
    position = last.json()["position"]

    def ids(**params) -> list[str]:
        found, cursor = [], None
        while True:
            page = writer.get("/v1/documents", params={**params, "limit": 2, "min_position": position,
                                                       **({"cursor": cursor} if cursor else {})})
            assert page.status_code == 200, page.text
            found += [d["document_id"] for d in page.json()["documents"]]
            cursor = page.json()["next_cursor"]
            if cursor is None:
                return found

    got = ids(namespace=ns[:2], type=["a", "b"])
    assert sorted(got) == sorted(made[(n, t)] for n in ns[:2] for t in ("a", "b")) and len(set(got)) == len(got)
    assert sorted(ids(namespace=ns, type="c")) == sorted(made[(n, "c")] for n in ns)
    assert sorted(ids(namespace=ns[2])) == sorted(made[(ns[2], t)] for t in ("a", "b", "c"))
    tagged = ids(namespace=ns, tag=["gold", "silver"])
    assert sorted(tagged) == sorted([made[(ns[0], "a")], made[(ns[1], "b")]])  # each document once
    assert ids(namespace=ns, tag=["silver"], type="b") == [made[(ns[1], "b")]]
    assert ids(namespace=ns, type=["a", "b"], tag="gold") == [made[(ns[0], "a")]]
    assert_problem(writer.get("/v1/documents", params={"type": ["a", "Bad Type"]}), 422, "validation_error", "type")


def test_repeated_filters_on_events(clients):
    writer, session = clients["writer"], f"evmulti-{uuid.uuid4().hex[:8]}"
    doc = create(writer, session, "brief")
    chain = writer.post("/v1/chains", headers={"X-Session-Id": session}, json={"name": "c"})
    assert chain.status_code == 201, chain.text
    agent = writer.post("/v1/agents", headers={"X-Session-Id": session},
                        json={"name": "a", "prompt": "p", "model": "m"})
    assert agent.status_code == 201, agent.text
    auditor = clients["auditor"]

    def listed(**params) -> list[tuple[str, str]]:
        response = auditor.get("/v1/events", params={"session": session, **params,
                                                     "min_position": agent.json()["position"]})
        assert response.status_code == 200, response.text
        return [(e["stream_type"], e["type"]) for e in response.json()["events"]]

    assert listed(stream_type=["document", "chain"]) == [("document", "document.created"), ("chain", "chain.created")]
    assert listed(stream_type="agent") == [("agent", "agent.created")]
    assert listed(type=["document.created", "agent.created"]) == [("document", "document.created"),
                                                                  ("agent", "agent.created")]
    assert listed(type=["document.created", "agent.created"], stream_type=["agent", "chain"]) == [
        ("agent", "agent.created")]
    assert doc["stream_id"]
