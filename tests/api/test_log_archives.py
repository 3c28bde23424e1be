"""An archived segment through the commands and the API: `chronicle archive export|list|restore`,
GET /v1/log/archives, 410 for reads of archived positions, and `chronicle verify` naming what it
skipped (docs/log-segments.md)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import httpx
import psycopg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from infrastructure.config import Settings
from infrastructure.db import create_pool
from infrastructure.event_store import EventStore
from infrastructure.seals import seal_log
from service_layer.keys import create_key
from tests.api.conftest import CHRONICLE, ROOT, assert_problem, chronicle_env, free_port, running_chronicle
from tests.conftest import as_owner
from tests.store.conftest import note_registry
from tests.store.segments import fill_segments


def _run(url: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CHRONICLE, *args], cwd=ROOT, env=chronicle_env(DATABASE_URL=url), capture_output=True,
                          text=True, timeout=120)


def test_an_archived_range_is_named_not_skipped(fresh_database_url: str, tmp_path: Path) -> None:
    pool = create_pool(fresh_database_url, Settings(chronicle_pool_min_size=1, chronicle_pool_max_size=2), name="arch")
    try:
        fill_segments(EventStore(pool, note_registry()), fresh_database_url)
        roles = ("auditor", "reader", "subscriber", "operator")
        tokens = {role: create_key(pool, f"t-{role}", role, actor_id=f"svc-{role}")[1] for role in roles}
        with pool.connection() as conn:
            archived_id = str(conn.execute("SELECT event_id FROM events WHERE position = 6").fetchone()["event_id"])
            sealed_with_it = str(conn.execute("SELECT event_id FROM events WHERE position = 2").fetchone()["event_id"])
        seal_log(pool, Ed25519PrivateKey.generate())  # one seal over positions 1-14
    finally:
        pool.close()
    owner, files = as_owner(fresh_database_url), tmp_path / "archive"

    refused = _run(fresh_database_url, "archive", "export", "events_segment_2", "--to", str(files))
    assert refused.returncode == 1 and "only the owner of the log" in refused.stderr, refused.stderr  # the app login
    exported = _run(owner, "archive", "export", "events_segment_2", "--to", str(files))
    assert exported.returncode == 0, exported.stderr
    assert exported.stdout.startswith("archived events_segment_2: 4 events, positions 5-8")
    listed = json.loads(_run(owner, "archive", "list", "--json").stdout)
    assert [(s["segment"], s["archive"]) for s in listed if s["archived_at"]] == \
        [("events_segment_2", "events_segment_2.manifest.json")]

    env = chronicle_env(DATABASE_URL=fresh_database_url, CHRONICLE_DATA_DIR=str(tmp_path / "data"))
    with running_chronicle(env, tmp_path / "server.log", free_port()) as base, \
            httpx.Client(base_url=base, headers={"Authorization": f"Bearer {tokens['auditor']}"}) as auditor:
        archives = auditor.get("/v1/log/archives").json()["archives"]
        assert [(a["segment"], a["first_position"], a["last_position"], a["event_count"]) for a in archives] == \
            [("events_segment_2", 5, 8, 4)]
        page = auditor.get("/v1/events", params={"limit": 10}).json()
        assert [e["position"] for e in page["events"]] == [1, 2, 3, 4]  # stops before the archive
        gone = assert_problem(auditor.get("/v1/events", params={"limit": 10, "cursor": page["next_cursor"]}),
                              410, "log_archived")
        assert "events_segment_2.manifest.json" in gone["detail"] and gone["archive"]["first_position"] == 5
        # A filter that matches nothing below the archive still stops before it: an empty page is
        # not the end of the log, its cursor leads to the 410 naming the archive.
        none = auditor.get("/v1/events", params={"actor": "nobody"}).json()
        assert none["events"] == [] and none["next_cursor"]
        assert_problem(auditor.get("/v1/events", params={"actor": "nobody", "cursor": none["next_cursor"]}),
                       410, "log_archived")
        assert_problem(auditor.get(f"/v1/events/{archived_id}"), 410, "log_archived", "event_id")
        assert_problem(auditor.get(f"/v1/events/{archived_id}/proof"), 410, "log_archived")
        assert_problem(auditor.get(f"/v1/events/{archived_id}/causation"), 410, "log_archived", "event_id")
        # An attached event whose seal also covers the archived positions: its proof needs them.
        assert_problem(auditor.get(f"/v1/events/{sealed_with_it}/proof"), 410, "log_archived", "event_id")
        # A stream's history names the archive holding its missing versions, in the middle or at the start.
        for stream in ("note-0", "note-2"):
            held = assert_problem(auditor.get(f"/v1/streams/{stream}/events"), 410, "log_archived", "from_version")
            assert held["archive"]["segment"] == "events_segment_2"
        whole = auditor.get("/v1/streams/note-1/events").json()  # all of it attached: read as before
        assert [e["stream_version"] for e in whole["events"]] == [1, 2, 3, 4]
        after = auditor.get("/v1/streams/note-0/events", params={"from_version": 5}).json()
        assert [e["stream_version"] for e in after["events"]] == [5, 6]
        first = auditor.get("/v1/streams/note-0/events", params={"to_version": 2}).json()
        assert [e["stream_version"] for e in first["events"]] == [1, 2]
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {tokens['subscriber']}"}) as follower:
            feed = assert_problem(follower.get("/v1/subscribe", params={"after": 2}), 410, "log_archived", "after")
            assert feed["archive"]["last_position"] == 8
            # A consumer group starting at the log's beginning cannot step over the archive either.
            member = follower.post("/v1/groups/auditing/members", json={}).json()["member_id"]
            fetched = follower.get(f"/v1/groups/auditing/members/{member}/events")
            assert assert_problem(fetched, 410, "log_archived", "group")["archive"]["segment"] == "events_segment_2"
            _move_the_group_past_the_archive(base, tokens["operator"], fresh_database_url)
            fetched = follower.get(f"/v1/groups/auditing/members/{member}/events").json()
            assert [e["position"] for e in fetched["events"]][:6] == list(range(9, 15))  # then the server's own
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {tokens['reader']}"}) as reader:
            assert_problem(reader.get("/v1/log/archives"), 403, "forbidden")

    skipped = _run(fresh_database_url, "verify")
    assert skipped.returncode == 0, skipped.stdout + skipped.stderr
    assert "skipped: positions 5-8 are archived in events_segment_2.manifest.json" in skipped.stdout
    from_files = _run(fresh_database_url, "verify", "--archives", str(files), "--json")
    report = json.loads(from_files.stdout)
    assert report["ok"] and report["archives_read"] == ["events_segment_2"]
    assert report["events"] == report["to_position"]  # every position, the archived ones read from the files

    restored = _run(owner, "archive", "restore", str(files / "events_segment_2.manifest.json"))
    assert restored.returncode == 0 and restored.stdout.startswith("restored events_segment_2: 4 events"), \
        restored.stderr
    whole = _run(fresh_database_url, "verify")
    assert whole.returncode == 0 and "skipped" not in whole.stdout and whole.stdout.startswith("ok: "), whole.stdout


def _move_the_group_past_the_archive(base: str, token: str, url: str) -> None:
    """An operator moves the group `auditing`, stuck below positions 5-8 (archived), past them:
    never into or before the archive, nor past the safe position."""
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}) as operator:
        for position, code in ((6, "position_archived"), (4, "position_archived"), (10_000, "position_not_reached")):
            refused = assert_problem(operator.post("/v1/groups/auditing/seek", json={"position": position}),
                                     422, code, "position")
            assert ("events_segment_2.manifest.json" in refused["detail"]) == (code == "position_archived")
        assert_problem(operator.post("/v1/groups/nobody/seek", json={"position": 8}), 404, "group_not_found")
        assert_problem(operator.post("/v1/groups/auditing/seek", json={"position": -1}), 422, "validation_error")
        refused = _run(url, "groups", "seek", "auditing", "--to", "7")
        assert refused.returncode == 1 and refused.stderr.startswith("error: position 7 is inside positions 5..8,"), \
            refused.stderr
        moved = operator.post("/v1/groups/auditing/seek", json={"position": 8})
        assert moved.status_code == 200, moved.text
        assert moved.json()["position"] == 8 and set(moved.json()["previous_checkpoints"].values()) == {0}
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT payload->>'target', payload->'details'->>'to_position' FROM events"
                            " WHERE type = 'operator.group_moved'").fetchall() == [("group:auditing", "8")]


def test_a_bad_manifest_is_one_line_naming_it(fresh_database_url: str, tmp_path: Path) -> None:
    manifest = tmp_path / "events_segment_2.manifest.json"
    manifest.write_text(json.dumps({"format": "chronicle-log-segment/1", "segment": "events_segment_2"}))
    refused = _run(as_owner(fresh_database_url), "archive", "restore", str(manifest))
    assert refused.returncode == 1 and refused.stdout == "", refused.stdout
    assert refused.stderr.strip() == f"error: {manifest}: field 'first_position' is missing or not an integer"
    manifest.write_text(json.dumps({"format": "chronicle-log-segment/1", "segment": "events_segment_2",
                                    "first_position": 5, "last_position": 8, "event_count": 4,
                                    "data_file": "events_segment_2.ndjson.gz", "data_sha256": "00"}))
    missing = _run(as_owner(fresh_database_url), "archive", "restore", str(manifest))
    assert missing.returncode == 1 and "Traceback" not in missing.stderr
    assert missing.stderr.strip() == (f"error: {manifest}: its data file 'events_segment_2.ndjson.gz'"
                                      f" (field 'data_file') is not in {tmp_path}")
