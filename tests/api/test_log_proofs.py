"""GET /v1/events/{id}/proof and GET /v1/log/seals through a real server; proofs checked offline."""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from infrastructure.log_proofs import check_proof
from infrastructure.seals import public_bytes, seal_log
from tests.api.conftest import CHRONICLE, ROOT, assert_problem, chronicle_env

KEY = Ed25519PrivateKey.generate()
# Content with a space: it can never occur by chance in the sealed field's base64 text.
DOC = {"namespace": "proofs", "type": "session_context", "title": "Proved", "content": "private words"}


def test_an_auditor_gets_a_proof_that_checks_offline(clients: dict[str, httpx.Client], api_pool,
                                                     tmp_path: Path) -> None:
    created = clients["writer"].post("/v1/documents", json=DOC)
    assert created.status_code == 201, created.text
    events = clients["auditor"].get("/v1/events", params={"stream": created.json()["stream_id"]}).json()["events"]
    event_id = events[0]["event_id"]
    seal_log(api_pool, KEY)

    assert_problem(clients["reader"].get(f"/v1/events/{event_id}/proof"), 403, "forbidden")
    assert_problem(clients["auditor"].get(f"/v1/events/{uuid.uuid4()}/proof"), 404, "event_not_found")
    assert_problem(clients["auditor"].get("/v1/events/not-a-uuid/proof"), 422)
    proof = clients["auditor"].get(f"/v1/events/{event_id}/proof")
    assert proof.status_code == 200, proof.text
    body = proof.json()
    assert body["event"]["event_id"] == event_id
    # The proof carries the payload as stored: the personal content sealed (its ciphertext is what
    # the hash covers, so erasure leaves proofs valid), the rest as the auditor reads it.
    with api_pool.connection() as conn:
        stored = conn.execute("SELECT payload FROM events WHERE event_id = %s", (event_id,)).fetchone()["payload"]
    proved = json.loads(body["event"]["payload_text"])
    assert proved == stored and proved["title"] == events[0]["payload"]["title"] == "Proved"
    assert "private words" not in body["event"]["payload_text"], "no plaintext of a personal field in a proof"
    assert check_proof(body, frozenset({public_bytes(KEY)})) == []

    # The same check as a command, with no database in reach.
    path = tmp_path / "proof.json"
    path.write_text(proof.text)
    env = chronicle_env(DATABASE_URL="postgresql://nowhere.invalid/none")
    ok = subprocess.run([CHRONICLE, "verify-proof", str(path), "--public-key", public_bytes(KEY).hex()],
                        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and ok.stdout.startswith(f"ok: event {event_id}"), ok.stdout + ok.stderr
    body["event"]["payload_text"] = body["event"]["payload_text"].replace("Proved", "Proven")
    path.write_text(json.dumps(body))
    bad = subprocess.run([CHRONICLE, "verify-proof", str(path)], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=60)
    assert bad.returncode == 1 and bad.stdout.startswith("FAILED: the event's content hashes to"), bad.stdout


def test_an_unsealed_event_has_no_proof_yet(clients: dict[str, httpx.Client]) -> None:
    created = clients["writer"].post("/v1/documents", json=DOC)
    stream = created.json()["stream_id"]
    event_id = clients["auditor"].get("/v1/events", params={"stream": stream}).json()["events"][0]["event_id"]
    assert_problem(clients["auditor"].get(f"/v1/events/{event_id}/proof"), 409, "not_sealed_yet", "event_id")


def test_seals_are_listed_a_page_at_a_time(clients: dict[str, httpx.Client], api_pool) -> None:
    for _ in range(3):
        clients["writer"].post("/v1/documents", json=DOC)
        seal_log(api_pool, KEY)
    first = clients["auditor"].get("/v1/log/seals", params={"limit": 2})
    assert first.status_code == 200, first.text
    page = first.json()
    assert len(page["seals"]) == 2 and page["next_cursor"]
    rest = clients["auditor"].get("/v1/log/seals", params={"cursor": page["next_cursor"], "limit": 200}).json()
    seals = page["seals"] + rest["seals"]
    assert [s["seal_number"] for s in seals] == list(range(1, len(seals) + 1)) and len(seals) >= 3
    assert all(later["previous_hash"] == earlier["seal_hash"] for earlier, later in zip(seals, seals[1:]))
    assert_problem(clients["auditor"].get("/v1/log/seals", params={"cursor": "bogus!"}), 422, "invalid_cursor")
    assert_problem(clients["auditor"].get("/v1/log/seals", params={"after": 3}), 422)
    assert_problem(clients["reader"].get("/v1/log/seals"), 403, "forbidden")
