"""Erasure without rewriting history: personal fields are encrypted per subject, and forgetting
one subject erases its fields on every read path while other subjects' data stays readable.

A `chronicle up` of its own (real PostgreSQL, in-process workers), with a snapshot every two
events so aggregate snapshots are among the read paths searched.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.api.conftest import ROLES, chronicle_env, free_port, running_chronicle
from tests.conftest import migrated_database

TYPES = ("session_context", "llm_interaction", "user_feedback")
OPS = ("create_text", "create_body", "update", "undo", "redo", "delete_restore", "tag")
# Tables whose text must never hold a forgotten subject's plaintext (read models and derived copies).
DERIVED = ("document", "document_version", "document_body", "document_tombstone", "active_tag", "tag_event",
           "session_touch", "snapshots")


@pytest.fixture(scope="module")
def erasure(admin_url: str, template_dbname: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """A server on a database of its own, a client per role, and a pool on its database."""
    from infrastructure.config import Settings
    from infrastructure.db import create_pool
    from service_layer.keys import create_key

    with migrated_database(admin_url, template_dbname) as url:
        pool = create_pool(url, Settings(chronicle_pool_min_size=1, chronicle_pool_max_size=4), name="erasure-tests")
        tokens = {role: create_key(pool, f"test-{role}", role, actor_id=f"svc-{role}")[1] for role in ROLES}
        env = chronicle_env(DATABASE_URL=url, CHRONICLE_SNAPSHOT_INTERVAL="2",
                            CHRONICLE_DATA_DIR=str(tmp_path_factory.mktemp("data")))
        log = tmp_path_factory.mktemp("server") / "server.log"
        with running_chronicle(env, Path(log), free_port()) as base:
            clients = {role: httpx.Client(base_url=base, headers={"Authorization": f"Bearer {t}"}, timeout=60)
                       for role, t in tokens.items()}
            try:
                yield {"clients": clients, "pool": pool}
            finally:
                for client in clients.values():
                    client.close()
                pool.close()


class History:
    """One example's writes: documents per subject and every secret written for each subject."""

    def __init__(self, clients: dict[str, httpx.Client], subjects: int) -> None:
        self.run = uuid.uuid4().hex[:10]
        self.writer = clients["writer"]
        self.subjects = [f"person-{self.run}-{i}" for i in range(subjects)]
        self.session = f"s-{self.run}"
        self.docs: dict[int, list[tuple[str, str]]] = {i: [] for i in range(subjects)}
        self.secrets: dict[int, list[str]] = {i: [] for i in range(subjects)}
        self.replays: dict[int, list[tuple[str, dict]]] = {i: [] for i in range(subjects)}
        self.position = 0

    def secret(self, who: int) -> str:
        text = f"secret{self.run}s{who}n{sum(map(len, self.secrets.values()))}"
        self.secrets[who].append(text)
        return text

    def _sent(self, response: httpx.Response) -> None:
        assert response.status_code < 500, response.text
        if response.status_code < 300 and "position" in response.json():
            self.position = max(self.position, response.json()["position"] or 0)

    def create(self, who: int, kind: str) -> None:
        text = self.secret(who)
        body = {"namespace": f"ns{self.run}", "type": TYPES[len(self.docs[who]) % 3], "title": "conversation"}
        body.update({"content": text} if kind == "text" else {"body": {"turns": [{"said": text}]}})
        key = f"idem-{uuid.uuid4().hex}"
        made = self.writer.post("/v1/documents", json=body, headers={
            "X-Subject-Id": self.subjects[who], "X-Session-Id": self.session, "Idempotency-Key": key})
        assert made.status_code == 201, made.text
        self._sent(made)
        self.docs[who].append((made.json()["stream_id"], kind))
        self.replays[who].append((key, body))

    def apply(self, who: int, op: str) -> None:
        if op.startswith("create") or not self.docs[who]:
            self.create(who, "body" if op == "create_body" else "text")
            return
        doc, kind = self.docs[who][-1]
        if op == "update":  # no X-Subject-Id: the stream's subject
            text = self.secret(who)
            change = {"content": text} if kind == "text" else {"body": {"turns": [{"said": text}]}}
            self._sent(self.writer.patch(f"/v1/documents/{doc}", json={**change, "change_description": f"by {text}"},
                                         headers={"X-Session-Id": self.session}))
        elif op in ("undo", "redo"):
            self._sent(self.writer.post(f"/v1/documents/{doc}/{op}"))
        elif op == "delete_restore":
            self._sent(self.writer.delete(f"/v1/documents/{doc}"))
            self._sent(self.writer.post(f"/v1/documents/{doc}/restore"))
        elif op == "tag":
            self._sent(self.writer.put(f"/v1/documents/{doc}/tags/live", json={"document_version": 1}))


def wait_rebuilt(client: httpx.Client, rebuilds: dict[str, int | None]) -> None:
    """Wait until each rebuild job the forget queued is done."""
    for name, job_id in rebuilds.items():
        deadline = time.monotonic() + 120
        while True:
            view = client.get(f"/v1/projections/{name}/rebuild").json()
            if view.get("job_id") == job_id and view["state"] in ("done", "failed", "crashed"):
                assert view["state"] == "done", view
                break
            assert time.monotonic() < deadline, view
            time.sleep(0.2)


def read_paths(clients: dict[str, httpx.Client], history: History) -> list[str]:
    """The text of every read path over the example's documents: reads, versions, tags, time
    travel, diff, the audit log, the session read, and replayed Idempotency-Key responses."""
    reader, auditor, writer = clients["reader"], clients["auditor"], clients["writer"]
    wait = {"min_position": history.position}
    texts = [reader.get("/v1/documents", params={"namespace": f"ns{history.run}", **wait}).text,
             reader.get(f"/v1/sessions/{history.session}/documents", params=wait).text]
    for docs in history.docs.values():
        for doc, _ in docs:
            versions = reader.get(f"/v1/documents/{doc}/versions", params=wait)
            texts += [reader.get(f"/v1/documents/{doc}", params=wait).text, versions.text,
                      reader.get(f"/v1/documents/{doc}/tags", params=wait).text]
            for row in versions.json().get("versions", []):
                texts.append(reader.get(f"/v1/documents/{doc}/versions/{row['document_version']}").text)
            listed = reader.get(f"/v1/documents/{doc}/history")
            current = listed.json()["current_stream_version"]
            texts += [listed.text, reader.get(f"/v1/documents/{doc}/diff", params={"from": 1, "to": current}).text]
            texts += [reader.get(f"/v1/documents/{doc}/history", params={"version": v}).text
                      for v in range(1, current + 1)]
            texts += [auditor.get(f"/v1/streams/{doc}/events").text,
                      auditor.get("/v1/events", params={"stream": doc}).text]
    for replays in history.replays.values():
        for key, body in replays:
            texts.append(writer.post("/v1/documents", json=body, headers={"Idempotency-Key": key}).text)
    return texts


def table_text(pool, tables: tuple[str, ...]) -> str:
    """Every row of these tables as text, plus the stored Idempotency-Key responses."""
    with pool.connection() as conn:
        parts = [conn.execute(f"SELECT coalesce(string_agg(t::text, ' '), '') AS t FROM {table} t").fetchone()["t"]
                 for table in tables]
        parts.append(conn.execute("SELECT coalesce(string_agg(encode(body, 'escape'), ' '), '') AS t"
                                  " FROM idempotency_keys").fetchone()["t"])
    return "\n".join(parts)


histories = st.lists(st.tuples(st.integers(0, 2), st.sampled_from(OPS)), min_size=1, max_size=10)


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=histories)
def test_forgetting_a_subject_erases_it_on_every_read_path(erasure, ops):
    clients, pool = erasure["clients"], erasure["pool"]
    history = History(clients, 3)
    for who in range(3):
        history.create(who, "text")
    for who, op in ops:
        history.apply(who, op)

    forgotten = clients["admin"].delete(f"/v1/subjects/{history.subjects[0]}")
    assert forgotten.status_code == 200, forgotten.text
    done = forgotten.json()
    assert done["key_destroyed"] is True
    assert {doc for doc, _ in history.docs[0]} <= set(done["streams"])
    assert done["responses_deleted"] >= len(history.replays[0])
    wait_rebuilt(clients["operator"], done["rebuilds"])

    seen = "\n".join(read_paths(clients, history)) + table_text(pool, DERIVED)
    leaked = [s for s in history.secrets[0] if s in seen]
    assert not leaked, f"{history.subjects[0]} forgotten, yet read back: {leaked}"
    for who in (1, 2):  # the others' data is intact: every text they wrote still reads back
        missing = [s for s in history.secrets[who] if s not in seen]
        assert not missing, f"{history.subjects[who]} was not forgotten, yet lost: {missing}"
    first = clients["auditor"].get(f"/v1/streams/{history.docs[0][0][0]}/events").json()["events"][0]["payload"]
    assert first.get("content") == "[erased]" or first.get("body") == {"erased": True}, first


def test_the_events_table_never_holds_personal_plaintext(erasure):
    clients, pool = erasure["clients"], erasure["pool"]
    history = History(clients, 2)
    for who, op in [(0, "create_text"), (1, "create_body"), (0, "update"), (1, "update"), (0, "undo"), (0, "redo")]:
        history.apply(who, op)
    secrets = [s for texts in history.secrets.values() for s in texts]
    # Readers see the plaintext...
    assert any(s in clients["auditor"].get("/v1/events", params={"stream": history.docs[0][0][0]}).text
               for s in history.secrets[0])
    # ...the stored payloads (and aggregate snapshots) hold only ciphertext.
    stored = table_text(pool, ("events", "snapshots"))
    assert not [s for s in secrets if s in stored]
    assert "AES-256-GCM" in stored and history.subjects[0] in stored


def test_forget_refuses_bad_input_and_needs_the_admin_role(erasure):
    clients = erasure["clients"]
    assert clients["operator"].delete("/v1/subjects/someone").status_code == 403
    bad = clients["admin"].delete("/v1/subjects/%20bad%20id")
    assert bad.status_code == 422 and bad.headers["content-type"].startswith("application/problem+json")
    again = clients["admin"].delete("/v1/subjects/never-seen")
    assert again.status_code == 200 and again.json()["key_destroyed"] is False and again.json()["streams"] == []
    # A subject once forgotten stays forgotten: what is written for it later is stored erased.
    made = clients["writer"].post("/v1/documents", headers={"X-Subject-Id": "never-seen"}, json={
        "namespace": "later", "type": "user_feedback", "title": "after", "content": "written after forgetting"})
    assert made.status_code == 201
    events = clients["auditor"].get(f"/v1/streams/{made.json()['stream_id']}/events").json()["events"]
    assert events[0]["payload"]["content"] == "[erased]"
