"""Through a real server: the HTTP contract clients generate from, and the request checks it promises.

/openapi.json validates, declares bearer auth and each operation's roles, types every body and
error; a client generated from it by openapi-python-client runs a command and a read. Unknown
query parameters, non-JSON bodies, weak ETags and Idempotency-Key reuse with another If-Match
are refused, with one code per condition and the field the caller sent.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.api.conftest import assert_problem

BIN = Path(sys.executable).parent
DOC = {"namespace": "contract", "type": "session_context", "title": "Contract", "content": "v1"}


@pytest.fixture(scope="module")
def spec(server: str) -> dict:
    response = httpx.get(f"{server}/openapi.json", timeout=30)
    assert response.status_code == 200
    return response.json()


def _operations(spec: dict):
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            yield path, method, op


def test_the_document_validates_and_types_every_response(spec: dict) -> None:
    from openapi_spec_validator import validate

    validate(spec)
    assert spec["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http", "scheme": "bearer", "description": spec["components"]["securitySchemes"]["bearerAuth"]["description"]}
    untyped, bare_errors = [], []
    for path, method, op in _operations(spec):
        if path.startswith("/v1"):
            assert op["security"] == [{"bearerAuth": []}], (method, path)
            assert op["x-chronicle-roles"] and "admin" in op["x-chronicle-roles"], (method, path)
            assert "**Roles:**" in op["description"], (method, path)
        for status, response in op["responses"].items():
            content = response.get("content") or {}
            if status == "204":
                assert not content, (method, path)  # no body
            elif status.startswith("2"):
                # JSON, or a feed typed by its NDJSON lines (its SSE frames carry the same JSON).
                typed = content.get("application/json") or content.get("application/x-ndjson") or {}
                schema = typed.get("schema", {})
                if "$ref" not in schema:
                    untyped.append(f"{method} {path} {status}")
            elif content.get("application/problem+json", {}).get("schema") != {"$ref": "#/components/schemas/Problem"}:
                bare_errors.append(f"{method} {path} {status}")
    assert not untyped and not bare_errors, (untyped, bare_errors)
    get_doc = spec["paths"]["/v1/documents/{document_id}"]
    assert get_doc["get"]["x-chronicle-roles"] == ["admin", "auditor", "reader", "writer"]
    assert get_doc["patch"]["x-chronicle-roles"] == ["admin", "writer"]
    assert "`document_deleted`" in get_doc["patch"]["responses"]["410"]["description"]
    assert "ETag" in get_doc["get"]["responses"]["200"]["headers"]
    patch = get_doc["patch"]
    assert {"ETag", "X-Chronicle-Position", "Idempotent-Replayed", "X-Correlation-Id"} <= set(
        patch["responses"]["200"]["headers"])
    assert {"If-Match", "Idempotency-Key", "X-Session-Id"} <= {p["name"] for p in patch["parameters"]}
    assert "412" in patch["responses"] and "415" in patch["responses"]
    assert {"X-Chronicle-Log-Head", "X-Chronicle-Safe-Position", "X-Chronicle-Log-Held-Back"} <= set(
        spec["paths"]["/v1/events"]["get"]["responses"]["200"]["headers"])
    document = spec["components"]["schemas"]["DocumentOut"]["properties"]
    assert "stream_version" in document and "document_version" in document and "version" not in document


def test_a_generated_client_creates_and_reads_a_document(spec: dict, server: str, tokens: dict[str, str],
                                                        tmp_path: Path) -> None:
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    # Generated under a name of its own: `chronicle_client` is the hand-written client in client/.
    (tmp_path / "config.json").write_text(json.dumps({"project_name_override": "chronicle-generated",
                                                      "package_name_override": "chronicle_generated"}))
    out = tmp_path / "client"
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    done = subprocess.run([str(BIN / "openapi-python-client"), "generate", "--path", str(tmp_path / "spec.json"),
                           "--output-path", str(out), "--config", str(tmp_path / "config.json")], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    sys.path.insert(0, str(out))
    try:
        package = importlib.import_module("chronicle_generated")
        create = importlib.import_module("chronicle_generated.api.commands.create_document_v1_documents_post")
        read = importlib.import_module("chronicle_generated.api.reads.get_document_v1_documents_document_id_get")
        models = importlib.import_module("chronicle_generated.models")
        client = package.AuthenticatedClient(base_url=server, token=tokens["writer"])
        made = create.sync_detailed(client=client, body=models.DocumentIn.from_dict(DOC), idempotency_key="gen-1")
        assert made.status_code == 201, made.content
        assert isinstance(made.parsed, models.CommandOut) and made.parsed.stream_version == 1
        got = read.sync(client=client, document_id=made.parsed.stream_id, min_position=made.parsed.position)
        assert isinstance(got, models.DocumentOut), got
        assert got.title == "Contract" and got.document_version == 1 and got.stream_version == 1
        missing = read.sync(client=client, document_id=str(uuid.uuid4()))
        assert isinstance(missing, models.Problem) and missing.code == "document_not_found"
    finally:
        sys.path.remove(str(out))
        for name in [n for n in sys.modules if n == "chronicle_generated" or n.startswith("chronicle_generated.")]:
            del sys.modules[name]


@pytest.mark.parametrize(("role", "path", "param"), [
    ("auditor", "/v1/events", "actor_id"),
    ("reader", "/v1/documents", "namspace"),
    ("reader", "/v1/agents", "nmae"),
    ("reader", "/v1/chains", "limt"),
    ("operator", "/v1/projections", "verbose"),
    ("admin", "/v1/keys", "role"),
    ("admin", "/healthz", "x"),
])
def test_an_unknown_query_parameter_is_named(clients, role: str, path: str, param: str) -> None:
    body = assert_problem(clients[role].get(path, params={param: "nobody"}), 422, "unknown_query_parameter", param)
    assert param in body["detail"]


def test_declared_and_metadata_parameters_still_pass(clients) -> None:
    reader = clients["reader"]
    assert reader.get("/v1/documents", params={"namespace": "contract", "metadata.rank": "3"}).status_code == 200
    assert clients["auditor"].get("/v1/events", params={"actor": "nobody", "limit": 1}).json()["events"] == []
    assert_problem(reader.get("/v1/agents/x/executions", params={"metadata.rank": "3"}), 422,
                   "unknown_query_parameter", "metadata.rank")  # no metadata filters on executions
    doc = clients["writer"].post("/v1/documents", json=DOC).json()["stream_id"]
    assert_problem(clients["writer"].post(f"/v1/documents/{doc}/undo", params={"force": "1"}), 422,
                   "unknown_query_parameter", "force")


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(name=st.text(st.characters(min_codepoint=97, max_codepoint=122), min_size=1, max_size=12))
def test_any_undeclared_name_is_refused(clients, name: str) -> None:
    declared = {"namespace", "type", "tag", "session", "cursor", "limit", "min_position"}
    response = clients["reader"].get("/v1/documents", params={name: "1"})
    if name in declared:
        assert response.status_code in (200, 422)
    else:
        assert_problem(response, 422, "unknown_query_parameter", name)


def _count_documents(api_pool) -> int:
    with api_pool.connection() as conn:
        return conn.execute("SELECT count(*) AS n FROM events WHERE type = 'document.created'").fetchone()["n"]


def test_a_body_that_is_not_json_is_415_and_writes_nothing(clients, api_pool) -> None:
    writer = clients["writer"]
    before = _count_documents(api_pool)
    raw = json.dumps(DOC).encode()
    for headers in ({}, {"content-type": "text/plain"}, {"content-type": "application/x-www-form-urlencoded"}):
        body = assert_problem(writer.post("/v1/documents", content=raw, headers=headers), 415,
                              "unsupported_media_type", "Content-Type")
        assert "application/json" in body["detail"]
    assert _count_documents(api_pool) == before
    ok = writer.post("/v1/documents", content=raw, headers={"content-type": "application/json; charset=utf-8"})
    assert ok.status_code == 201
    # No body at all needs no content type.
    assert writer.delete(f"/v1/documents/{ok.json()['stream_id']}").status_code == 200


def test_a_weak_etag_never_matches(clients) -> None:
    writer = clients["writer"]
    doc = writer.post("/v1/documents", json=DOC)
    stream = doc.json()["stream_id"]
    assert doc.headers["etag"] == '"1"'
    weak = writer.patch(f"/v1/documents/{stream}", headers={"If-Match": 'W/"1"'}, json={"content": "v2"})
    assert_problem(weak, 412, "precondition_failed", "If-Match")
    strong = writer.patch(f"/v1/documents/{stream}", headers={"If-Match": '"1"'}, json={"content": "v2"})
    assert strong.status_code == 200 and strong.json()["stream_version"] == 2


def test_an_idempotency_key_with_another_if_match_is_a_different_request(clients) -> None:
    writer = clients["writer"]
    stream = writer.post("/v1/documents", json=DOC).json()["stream_id"]
    key = f"k-{uuid.uuid4().hex}"
    first = writer.patch(f"/v1/documents/{stream}", headers={"If-Match": '"1"', "Idempotency-Key": key},
                         json={"content": "v2"})
    assert first.status_code == 200
    again = writer.patch(f"/v1/documents/{stream}", headers={"If-Match": '"1"', "Idempotency-Key": key},
                         json={"content": "v2"})
    assert again.status_code == 200 and again.headers["idempotent-replayed"] == "true"
    other = writer.patch(f"/v1/documents/{stream}", headers={"If-Match": '"2"', "Idempotency-Key": key},
                         json={"content": "v2"})
    assert_problem(other, 422, "idempotency_key_reused", "Idempotency-Key")
    assert "idempotent-replayed" not in other.headers
    read = writer.get(f"/v1/documents/{stream}", params={"min_position": first.json()["position"]})
    assert read.headers["etag"] == '"2"'


def test_one_code_per_condition_naming_the_field(clients) -> None:
    writer = clients["writer"]
    assert_problem(writer.patch(f"/v1/documents/{uuid.uuid4()}", json={"content": "x"}), 404,
                   "document_not_found", "document_id")
    assert_problem(writer.patch(f"/v1/chains/{uuid.uuid4()}", json={"name": "x"}), 404, "chain_not_found", "chain_id")
    assert_problem(writer.patch(f"/v1/agents/{uuid.uuid4()}", json={"name": "x"}), 404, "agent_not_found", "agent_id")
    agent = writer.post("/v1/agents", json={"name": "A", "prompt": "p", "model": "m"}).json()
    deleted = writer.delete(f"/v1/agents/{agent['stream_id']}")
    assert deleted.status_code == 200
    assert_problem(writer.get(f"/v1/agents/{agent['stream_id']}",
                              params={"min_position": deleted.headers["x-chronicle-position"]}),
                   410, "agent_deleted", "agent_id")
    assert_problem(writer.patch(f"/v1/agents/{agent['stream_id']}", json={"name": "B"}), 410, "agent_deleted",
                   "agent_id")
    chain = writer.post("/v1/chains", json={"name": "C"}).json()
    deleted = writer.delete(f"/v1/chains/{chain['stream_id']}")
    assert_problem(writer.get(f"/v1/chains/{chain['stream_id']}",
                              params={"min_position": deleted.headers["x-chronicle-position"]}),
                   410, "chain_deleted", "chain_id")
    assert_problem(writer.put(f"/v1/chains/{chain['stream_id']}/canvas", json={"canvas_state": {}}), 410,
                   "chain_deleted", "chain_id")
    doc = writer.post("/v1/documents", json=DOC).json()["stream_id"]
    assert_problem(writer.get(f"/v1/documents/{doc}/history", params={"as_of": "2001-01-01T00:00:00Z"}), 404,
                   "version_not_found", "as_of")
    malformed = assert_problem(writer.post("/v1/documents", content=b'{"title": ', headers={
        "content-type": "application/json"}), 422, "validation_error", "body")
    assert "character" in malformed["detail"] and malformed["errors"][0]["field"] == "body"


def test_stream_version_and_document_version_are_named_apart(clients) -> None:
    writer = clients["writer"]
    made = writer.post("/v1/documents", json=DOC)
    doc = made.json()["stream_id"]
    assert "version" not in made.json() and made.json()["stream_version"] == 1
    writer.patch(f"/v1/documents/{doc}", json={"content": "v2"})
    tagged = writer.put(f"/v1/documents/{doc}/tags/live", json={"document_version": 2})
    assert tagged.status_code == 200 and tagged.json()["stream_version"] == 3
    got = writer.get(f"/v1/documents/{doc}", params={"min_position": tagged.json()["position"]})
    body = got.json()
    assert body["document_version"] == 2 and body["stream_version"] == 3 and got.headers["etag"] == '"3"'
    assert "version" not in body and "last_version" not in body and body["tags"] == {"live": 2}
    versions = writer.get(f"/v1/documents/{doc}/versions").json()["versions"]
    assert [(v["document_version"], v["stream_version"]) for v in versions] == [(1, 1), (2, 2)]
    history = writer.get(f"/v1/documents/{doc}/history").json()
    assert history["current_stream_version"] == 3 and [v["stream_version"] for v in history["versions"]] == [1, 2, 3]
    listed = writer.get("/v1/documents", params={"namespace": "contract", "limit": 1}).json()["documents"][0]
    assert "tags" not in listed and "tag" not in listed  # a typed body adds no keys the route did not give
    events = clients["auditor"].get(f"/v1/streams/{doc}/events").json()
    assert all("depth" not in e for e in events["events"])
    assert events["stream_version"] == 3 and [e["stream_version"] for e in events["events"]] == [1, 2, 3]
    stale = writer.patch(f"/v1/documents/{doc}", headers={"If-Match": '"1"'}, json={"content": "x"})
    assert assert_problem(stale, 412, "precondition_failed", "If-Match")["current_stream_version"] == 3


def _paths_of(path_format: str) -> list[str]:
    """Concrete paths a route's path template takes (each parameter as a few kinds of value)."""
    values = ("x1", "00000000-0000-0000-0000-000000000000", "7", "a/b")
    paths = [path_format]
    while "{" in paths[0]:
        paths = [p[:p.index("{")] + v + p[p.index("}") + 1:] for p in paths for v in values]
    return paths


def test_the_routers_matched_first_share_no_path_with_the_routers_they_pass() -> None:
    """The app matches document reads and commands ahead of routers /openapi.json lists before them:
    no path may match a route of both, or a request (or its 405) would change hands."""
    from api.app import MATCHED_FIRST, ROUTERS

    matched = [*MATCHED_FIRST, *(r for r in ROUTERS if r not in MATCHED_FIRST)]
    crossed = [(a, b) for a in ROUTERS for b in ROUTERS
               if ROUTERS.index(a) < ROUTERS.index(b) and matched.index(a) > matched.index(b)]
    assert crossed  # the test checks something
    shared = [(x.path, y.path) for a, b in crossed for x in a.routes for y in b.routes
              if any(y.path_regex.match(p) for p in _paths_of(x.path))
              or any(x.path_regex.match(p) for p in _paths_of(y.path))]
    assert shared == []
