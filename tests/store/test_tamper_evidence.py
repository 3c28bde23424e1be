"""Tamper evidence: every event's hash chains its stream, seals sign the log, `verify` finds changes.

Appends run as the application login; the tampering runs as the owner (a superuser here),
who alone can disable the immutability trigger: what an attacker with the database would do.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path

import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from psycopg.rows import dict_row

from infrastructure.event_store import ANY, NO_STREAM, EventStore, NewEvent
from infrastructure.log_hashes import event_hash
from infrastructure.log_proofs import check_proof, inclusion_proof
from infrastructure.log_verify import VerifyReport, verify_log
from infrastructure.seals import public_bytes, seal_log
from tests.api.conftest import chronicle_env
from tests.cli.conftest import CHRONICLE, ROOT
from tests.conftest import as_owner

KEY = Ed25519PrivateKey.generate()


def _write(store: EventStore, streams: int = 3, each: int = 4) -> None:
    """Appends of one and of several events to a few streams, interleaved."""
    for round_ in range(each):
        for s in range(streams):
            events = [NewEvent("note.written", {"text": f"s{s} r{round_} e{i}", "n": i}) for i in range(1 + s % 2)]
            store.append(f"note-{s}", ANY, events, {"actor_id": "tamper-test"})


def _verify(url: str) -> VerifyReport:
    with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
        return verify_log(conn, trusted_keys=frozenset({public_bytes(KEY)}))


def _tamper(url: str, sql: str, params: tuple = ()) -> None:
    """Run `sql` as the owner with the events' immutability triggers off, as an attacker would."""
    with psycopg.connect(as_owner(url), autocommit=True) as conn, conn.transaction():
        conn.execute("ALTER TABLE events DISABLE TRIGGER USER")
        conn.execute("ALTER TABLE seals DISABLE TRIGGER USER")
        conn.execute(sql, params)
        conn.execute("ALTER TABLE events ENABLE TRIGGER USER")
        conn.execute("ALTER TABLE seals ENABLE TRIGGER USER")


def test_each_hash_is_recomputed_in_python_from_the_stored_content(store: EventStore, fresh_database_url: str) -> None:
    _write(store)
    with psycopg.connect(fresh_database_url, row_factory=dict_row) as conn:
        rows = conn.execute("SELECT *, payload::text AS p, metadata::text AS m FROM events ORDER BY stream_id, version")
        previous: dict[str, bytes] = {}
        for row in rows:
            expected = event_hash(previous.get(row["stream_id"]), row["event_id"], row["stream_id"], row["stream_type"],
                                  row["version"], row["type"], row["schema_version"], row["p"], row["m"],
                                  row["recorded_at"])
            assert bytes(row["hash"]) == expected
            previous[row["stream_id"]] = expected
        heads = {r["stream_id"]: bytes(r["head_hash"]) for r in conn.execute("SELECT * FROM streams")}
    assert heads == previous


# Awkward content for the hash's byte layout: empty texts, characters of 2, 3 and 4 UTF-8 bytes,
# a backslash, a long payload; no previous hash and one; times before and after 1970.
AWKWARD = [
    (None, "", "", "", {}, {}, "1969-12-31T23:59:59.999999+00:00"),
    (bytes(range(32)), "strëam-日本-😀", "typé", "note.édité", {"t": "é" * 300, "n": [1, None]},
     {"actor_id": "a\\b"}, "2026-11-30T12:00:00.123456+00:00"),
]


@pytest.mark.parametrize("previous, stream, stream_type, type_name, payload, metadata, at", AWKWARD)
def test_the_databases_event_hash_is_pythons_for_awkward_content(
        fresh_database_url: str, previous, stream, stream_type, type_name, payload, metadata, at) -> None:
    """schema/0024 builds the same bytes as 0016 with fewer calls: the value must not move."""
    event_id = uuid.uuid4()
    with psycopg.connect(fresh_database_url, row_factory=dict_row) as conn:
        row = conn.execute("SELECT event_hash(%s, %s, %s, %s, 7, %s, 3, %s::jsonb, %s::jsonb, %s::timestamptz) AS hash,"
                           " %s::jsonb::text AS p, %s::jsonb::text AS m, %s::timestamptz AS at",
                           (previous, event_id, stream, stream_type, type_name, json.dumps(payload),
                            json.dumps(metadata), at, json.dumps(payload), json.dumps(metadata), at)).fetchone()
    assert bytes(row["hash"]) == event_hash(previous, event_id, stream, stream_type, 7, type_name, 3, row["p"],
                                            row["m"], row["at"])


def test_each_appended_id_is_claimed_at_its_position(store: EventStore, fresh_database_url: str) -> None:
    """The append functions claim each event's id in log_event_ids at the event's own position."""
    _write(store)
    with psycopg.connect(fresh_database_url, row_factory=dict_row) as conn:
        unclaimed = conn.execute("SELECT e.position FROM events e LEFT JOIN log_event_ids i"
                                 " ON i.event_id = e.event_id AND i.position = e.position"
                                 " WHERE i.event_id IS NULL").fetchall()
        claims = conn.execute("SELECT count(*) AS n FROM log_event_ids").fetchone()["n"]
    assert unclaimed == [] and claims == 16


def test_an_untouched_sealed_log_verifies(store: EventStore, fresh_database_url: str, fresh_pool) -> None:
    _write(store)
    first = seal_log(fresh_pool, KEY)
    _write(store, streams=2, each=2)
    second = seal_log(fresh_pool, KEY)
    assert [s.seal_number for s in first + second] == [1, 2]
    assert second[0].previous_hash == first[0].seal_hash and second[0].from_position == first[0].to_position
    assert seal_log(fresh_pool, KEY) == []  # nothing new
    report = _verify(fresh_database_url)
    assert report.ok, report.mismatches
    assert report.seals == 2 and report.events == second[0].to_position


def test_a_changed_payload_is_named_by_its_position(store: EventStore, fresh_database_url: str, fresh_pool) -> None:
    _write(store)
    seal_log(fresh_pool, KEY)
    _write(store, streams=1, each=2)  # some unsealed events after the seal
    with psycopg.connect(fresh_database_url) as conn:
        sealed_target, unsealed_target = (r[0] for r in conn.execute(
            "SELECT position FROM events WHERE position IN ((SELECT min(position) + 4 FROM events),"
            " (SELECT max(position) - 1 FROM events)) ORDER BY position"))
    for target in (sealed_target, unsealed_target):
        _tamper(fresh_database_url, "UPDATE events SET payload = jsonb_set(payload, '{text}', '\"forged\"')"
                " WHERE position = %s", (target,))
    report = _verify(fresh_database_url)
    assert not report.ok
    assert report.mismatches[0].position == sealed_target
    assert "content or chain was changed" in report.mismatches[0].what
    assert any(m.position == unsealed_target for m in report.mismatches)


def test_a_deleted_event_is_caught_sealed_or_not(store: EventStore, fresh_database_url: str, fresh_pool) -> None:
    _write(store)
    [seal] = seal_log(fresh_pool, KEY)
    last = store.append("note-last", NO_STREAM, [NewEvent("note.written", {"text": "last"})]).position
    _tamper(fresh_database_url, "DELETE FROM events WHERE position IN (%s, %s)", (seal.to_position - 1, last))
    report = _verify(fresh_database_url)
    whats = " | ".join(m.what for m in report.mismatches)
    assert not report.ok
    assert "events were deleted or added" in whats  # the seal's count
    assert any(m.what.startswith("stream note-last is at version 1") for m in report.mismatches), whats


@pytest.mark.parametrize("change", [
    "UPDATE seals SET merkle_root = sha256(merkle_root)",
    "UPDATE seals SET event_count = event_count - 1, to_position = to_position - 1",
    "UPDATE seals SET signature = overlay(signature placing '\\x00'::bytea from 1)",
])
def test_an_altered_seal_is_caught(store: EventStore, fresh_database_url: str, fresh_pool, change: str) -> None:
    _write(store)
    seal_log(fresh_pool, KEY)
    _tamper(fresh_database_url, change)
    report = _verify(fresh_database_url)
    assert not report.ok
    assert report.mismatches[0].what.startswith("seal 1 ")


def test_a_seal_re_signed_with_another_key_is_not_trusted(store: EventStore, fresh_database_url: str,
                                                          fresh_pool) -> None:
    """A superuser can rewrite an event and re-seal it, but not with the operator's key."""
    _write(store)
    forger = Ed25519PrivateKey.generate()
    seal_log(fresh_pool, forger)
    report = _verify(fresh_database_url)
    assert [m.what.endswith("which is not a trusted seal key") for m in report.mismatches] == [True]


def test_proofs_check_offline_and_fail_for_a_changed_event(store: EventStore, fresh_database_url: str,
                                                           fresh_pool) -> None:
    _write(store, streams=3, each=3)
    seal_log(fresh_pool, KEY)
    trusted = frozenset({public_bytes(KEY)})
    with psycopg.connect(fresh_database_url, autocommit=True) as conn:
        ids = [r[0] for r in conn.execute("SELECT event_id FROM events ORDER BY position")]
        proofs = [inclusion_proof(conn, event_id) for event_id in ids]
        assert inclusion_proof(conn, uuid.uuid4()) is None
    for proof in proofs:
        assert check_proof(json.loads(json.dumps(proof)), trusted) == []
    changed = json.loads(json.dumps(proofs[2]))
    changed["event"]["payload_text"] = changed["event"]["payload_text"].replace("s", "S", 1)
    assert any("hashes to" in failure for failure in check_proof(changed, trusted))
    moved = json.loads(json.dumps(proofs[2]))
    moved["leaf_index"] += 1
    assert check_proof(moved, trusted) == ["the audit path does not lead from the event to the seal's Merkle root"]
    assert check_proof(proofs[0], frozenset({public_bytes(Ed25519PrivateKey.generate())}))


def _chronicle(url: str, *args: str, key_file: Path) -> subprocess.CompletedProcess:
    return subprocess.run([CHRONICLE, *args], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env=chronicle_env(DATABASE_URL=url, CHRONICLE_SEAL_KEY_FILE=str(key_file)))


def test_the_verify_command_names_the_changed_position_and_exits_non_zero(
        store: EventStore, fresh_database_url: str, tmp_path: Path) -> None:
    key_file = tmp_path / "seal.key"
    key_file.write_text(_chronicle(fresh_database_url, "seal-key", key_file=tmp_path / "none").stdout)
    _write(store)
    sealed = _chronicle(fresh_database_url, "seal", key_file=key_file)
    assert sealed.returncode == 0 and sealed.stdout.startswith("seal 1: positions 1-"), sealed.stderr
    good = _chronicle(fresh_database_url, "verify", key_file=key_file)
    assert good.returncode == 0 and good.stdout.startswith("ok: "), good.stdout + good.stderr
    _tamper(fresh_database_url, "UPDATE events SET payload = '{\"text\": \"forged\"}' WHERE position = 5")
    bad = _chronicle(fresh_database_url, "verify", key_file=key_file)
    assert bad.returncode == 1
    assert bad.stdout.startswith("MISMATCH at position 5: event "), bad.stdout
    as_json = _chronicle(fresh_database_url, "verify", "--json", "--from", "4", key_file=key_file)
    assert as_json.returncode == 1 and json.loads(as_json.stdout)["mismatches"][0]["position"] == 5
