"""Through a real server: other clients' advisory locks on the same database (a psql prompt, a
migration tool, a job queue) neither hide events from the API's reads nor block its writes."""

from __future__ import annotations

import time

from tests.support import foreign_locks_on_the_next_position

DOC = {"namespace": "locks", "type": "session_context", "title": "Locked out?", "content": "no"}


def test_foreign_advisory_locks_neither_hold_reads_back_nor_block_writes(clients, api_database_url):
    writer, auditor, reader = clients["writer"], clients["auditor"], clients["reader"]
    # Idle in psql: a small key, the old key of the next position, and Chronicle's own next key.
    with foreign_locks_on_the_next_position(api_database_url):
        started = time.monotonic()
        created = writer.post("/v1/documents", json=DOC)
        assert created.status_code == 201, created.text
        assert time.monotonic() - started < 5  # before: waited for the statement timeout, then 503
        doc, position = created.json()["stream_id"], created.json()["position"]

        listed = auditor.get("/v1/events", params={"stream": doc})
        assert listed.status_code == 200
        assert [e["position"] for e in listed.json()["events"]] == [position]
        assert int(listed.headers["x-chronicle-safe-position"]) >= position
        assert int(listed.headers["x-chronicle-log-head"]) >= position
        assert "x-chronicle-log-held-back" not in listed.headers
        got = reader.get(f"/v1/documents/{doc}", params={"min_position": position})
        assert got.status_code == 200 and got.json()["title"] == DOC["title"], got.text
        assert clients["anonymous"].get("/readyz").status_code == 200
        blockers = clients["operator"].get("/v1/log/blockers").json()
        assert blockers["blockers"] == [] and blockers["held_back_since"] is None
