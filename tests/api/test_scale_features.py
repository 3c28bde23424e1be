"""Through a real server: ids in order (UUIDv7), tag lists paged in order, audit time windows,
operator metadata indexes (`chronicle indexes`), and retention with time travel from the log."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from datetime import datetime, timezone
from uuid import UUID

from projections.retention import prune_versions
from projections.verify import verify
from tests.api.conftest import CHRONICLE, ROOT, chronicle_env


def _create(writer, ns: str, **fields) -> tuple[str, int]:
    body = {"namespace": ns, "type": "llm_interaction", "title": "t", "content": "c0", **fields}
    response = writer.post("/v1/documents", json=body)
    assert response.status_code == 201, response.text
    return response.json()["stream_id"], int(response.headers["x-chronicle-position"])


def test_chronicle_makes_version_7_ids_in_order(clients):
    writer, auditor = clients["writer"], clients["auditor"]
    first, _ = _create(writer, "ids")
    second, position = _create(writer, "ids")
    assert UUID(first).version == UUID(second).version == 7 and UUID(first) < UUID(second)
    events = auditor.get(f"/v1/streams/{second}/events", params={"min_position": position}).json()["events"]
    assert events and all(UUID(e["event_id"]).version == 7 for e in events)
    # A client's own ids are still taken as given.
    own = uuid.uuid4()
    response = writer.post("/v1/documents", json={"document_id": str(own), "namespace": "ids",
                                                  "type": "note", "title": "t", "content": "c"})
    assert response.status_code == 201 and response.json()["stream_id"] == str(own)


def test_tag_lists_page_newest_first_at_the_first_given_tags_version(clients):
    writer = clients["writer"]
    ns = f"tags{uuid.uuid4().hex[:6]}"
    docs = []
    for n in range(6):
        doc, _ = _create(writer, ns, content=f"v1-{n}")
        assert writer.patch(f"/v1/documents/{doc}", json={"content": f"v2-{n}"}).status_code == 200
        docs.append(doc)
    for n, doc in enumerate(docs):
        for tag, version, wanted in (("alpha", 1, n % 2 == 0), ("beta", 2, n % 3 == 0)):
            if wanted:
                last = writer.put(f"/v1/documents/{doc}/tags/{tag}", json={"version": version})
                assert last.status_code == 200
    wait = int(last.headers["x-chronicle-position"])
    seen, cursor = [], None
    while True:
        params = {"namespace": ns, "tag": ["beta", "alpha"], "limit": 2, "min_position": wait,
                  **({"cursor": cursor} if cursor else {})}
        page = writer.get("/v1/documents", params=params).json()
        seen += [(d["document_id"], d["tag"], d["document_version"], d["content"]) for d in page["documents"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    expected = [(docs[n], "beta" if n % 3 == 0 else "alpha", 2 if n % 3 == 0 else 1,
                 f"v2-{n}" if n % 3 == 0 else f"v1-{n}") for n in (4, 3, 2, 0)]
    assert seen == expected


def test_an_audit_time_window_is_exact(clients):
    writer, auditor = clients["writer"], clients["auditor"]
    session = f"win-{uuid.uuid4().hex[:8]}"
    headers = {"X-Session-Id": session}
    before = writer.post("/v1/documents", headers=headers, json={"namespace": "win", "type": "note", "title": "a",
                                                                 "content": "a"})
    time.sleep(0.05)
    middle = datetime.now(timezone.utc)
    time.sleep(0.05)
    after = writer.post("/v1/documents", headers=headers, json={"namespace": "win", "type": "note", "title": "b",
                                                                "content": "b"})
    wait = after.headers["x-chronicle-position"]

    def listed(**params) -> list[str]:
        got = auditor.get("/v1/events", params={"session": session, "min_position": wait, **params})
        assert got.status_code == 200, got.text
        return [e["stream_id"] for e in got.json()["events"]]

    first, second = before.json()["stream_id"], after.json()["stream_id"]
    assert listed(since=middle.isoformat()) == [second]
    assert listed(until=middle.isoformat()) == [first]
    assert listed(since="2000-01-01T00:00:00Z", until="2100-01-01T00:00:00Z") == [first, second]
    assert listed(since="2100-01-01T00:00:00Z") == []


def _cli(api_database_url: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CHRONICLE, *args], cwd=ROOT, env=chronicle_env(DATABASE_URL=api_database_url),
                          capture_output=True, text=True, timeout=120)


def test_operators_add_list_and_drop_a_metadata_index(clients, api_database_url):
    """The index is built; the filter answers the same with it (its plan: tests/store/test_bounded_plans.py)."""
    writer = clients["writer"]
    ns = f"meta{uuid.uuid4().hex[:6]}"
    wanted = [_create(writer, ns, metadata={"agent_type": "planner"})[0] for _ in range(2)]
    _, wait = _create(writer, ns, metadata={"agent_type": "critic"})
    params = {"namespace": ns, "type": "llm_interaction", "metadata.agent_type": "planner", "min_position": wait}
    before = [d["document_id"] for d in writer.get("/v1/documents", params=params).json()["documents"]]
    assert before == wanted[::-1]
    added = _cli(api_database_url, "indexes", "add", "--type", "llm_interaction", "--field", "agent_type", "--json")
    assert added.returncode == 0, added.stderr
    index = json.loads(added.stdout)
    assert index["name"] == "document_meta_llm_interaction_agent_type" and index["valid"]
    listed = json.loads(_cli(api_database_url, "indexes", "list", "--json").stdout)
    assert [(i["name"], i["document_type"], i["field"]) for i in listed] == [
        (index["name"], "llm_interaction", "agent_type")]
    assert [d["document_id"] for d in writer.get("/v1/documents", params=params).json()["documents"]] == before
    refused = _cli(api_database_url, "indexes", "add", "--field", "agent'type")
    assert refused.returncode == 2 and "field" in refused.stderr
    assert _cli(api_database_url, "indexes", "drop", index["name"]).returncode == 0
    assert _cli(api_database_url, "indexes", "drop", "document_pkey").returncode == 1
    assert json.loads(_cli(api_database_url, "indexes", "list", "--json").stdout) == []


def test_retention_prunes_old_bodies_and_the_log_still_has_them(clients, api_pool):
    """Old versions lose their bodies in the read model, except the tagged one and the latest;
    reading a pruned version and time travel to it still answer from the log."""
    writer = clients["writer"]
    ns = f"keep{uuid.uuid4().hex[:6]}"
    doc, _ = _create(writer, ns, content="first")
    for content in ("second", "third", "fourth"):
        assert writer.patch(f"/v1/documents/{doc}", json={"content": content}).status_code == 200
    tagged = writer.put(f"/v1/documents/{doc}/tags/release", json={"version": 2})
    wait = int(tagged.headers["x-chronicle-position"])
    versions = writer.get(f"/v1/documents/{doc}/versions", params={"min_position": wait}).json()["versions"]
    assert [v["document_version"] for v in versions] == [1, 2, 3, 4]
    time.sleep(1.0)
    result = prune_versions(api_pool, 0.5 / 86400)  # older than half a second
    assert result.bodies_pruned >= 2
    with api_pool.connection() as conn:
        kept = {r["version"]: r["kept"] for r in conn.execute(
            "SELECT v.version, b.body_hash IS NOT NULL AS kept FROM document_version v"
            " LEFT JOIN document_body b ON b.body_hash = v.body_hash WHERE v.document_id = %s", (doc,)).fetchall()}
    assert kept == {1: False, 2: True, 3: False, 4: True}
    for version, content in ((1, "first"), (2, "second"), (3, "third"), (4, "fourth")):
        got = writer.get(f"/v1/documents/{doc}/versions/{version}")
        assert got.status_code == 200 and got.json()["content"] == content, got.text
        stream_version = got.json()["stream_version"]
        travel = writer.get(f"/v1/documents/{doc}/history", params={"version": stream_version})
        assert travel.status_code == 200 and travel.json()["state"]["content"] == content
    listed = writer.get("/v1/documents", params={"tag": "release", "namespace": ns}).json()["documents"]
    assert [(d["document_version"], d["content"]) for d in listed] == [(2, "second")]
    # A version tagged after its body was pruned: the tag list reads the body from the log.
    late = writer.put(f"/v1/documents/{doc}/tags/late", json={"version": 1})
    listed = writer.get("/v1/documents", params={"tag": "late", "namespace": ns,
                                                 "min_position": late.headers["x-chronicle-position"]}).json()
    assert [(d["document_version"], d["content"]) for d in listed["documents"]] == [(1, "first")]
    assert prune_versions(api_pool, 0.5 / 86400).bodies_pruned == 0  # nothing left to prune
    # Verify does not count pruned bodies as differences. (Only this document is asserted on: the
    # package's database holds other tests' streams, some parked and skipped on purpose.)
    report = verify(api_pool, "documents")
    assert [d for d in report.differences if d.stream_id == doc] == [], report.differences
