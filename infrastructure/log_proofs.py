"""Inclusion proofs: one event, its hash inputs, the seal that covers it and its audit path.

`inclusion_proof` builds one from the database; `check_proof` checks one offline, with no
database (the algorithm of docs/tamper-evidence.md, which `chronicle verify-proof` runs).
Bytes travel as lowercase hex.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any
from uuid import UUID

import psycopg
from psycopg.rows import dict_row

from infrastructure.log_keys import of_stream
from infrastructure.log_segments import ArchivedRange, Segment, archived_segments
from infrastructure.log_hashes import audit_path, event_hash, leaf_hash, root_from_path
from infrastructure.seals import SEAL_COLUMNS, Seal, seal_of, signature_holds


class NotSealedYet(Exception):
    """The event exists but no seal covers it yet (the sealer has not reached it)."""


def _archived_under(conn: psycopg.Connection, seal: Seal, position: int) -> Segment:
    """The archived segment that holds part of `seal`'s range, else the one below `position`
    (where an event's previous hash lies): what a proof needs that the log does not hold now."""
    archived = archived_segments(conn)
    inside = [s for s in archived if s.first_position <= seal.to_position and s.end_position - 1 > seal.from_position]
    below = [s for s in archived if s.first_position < position]
    return (inside or below)[0]


def inclusion_proof(conn: psycopg.Connection, event_id: UUID) -> dict[str, Any] | None:
    """The proof that an event is in its seal's Merkle tree; None when no such event is stored.

    Raises NotSealedYet when the event is newer than the last seal.
    """
    with conn.cursor(row_factory=dict_row) as cur:
        event = cur.execute(
            "SELECT e.position, e.event_id, stream_id, stream_type, version, type, schema_version,"
            " payload::text AS payload_text, metadata::text AS metadata_text, recorded_at, hash,"
            f" (SELECT p.hash FROM events p WHERE {of_stream('p.stream_id', 'e.stream_id')}"
            "  AND p.version = e.version - 1) AS previous"
            " FROM log_event_ids i JOIN events e ON e.position = i.position WHERE i.event_id = %s",
            (event_id,),
        ).fetchone()
        if event is None:
            return None
        row = cur.execute(f"SELECT {SEAL_COLUMNS} FROM seals WHERE to_position >= %s ORDER BY to_position LIMIT 1",
                          (event["position"],)).fetchone()
        if row is None:
            raise NotSealedYet(f"event {event_id} at position {event['position']} is not sealed yet")
        seal = seal_of(row)
        sealed = cur.execute("SELECT position, hash FROM events WHERE position > %s AND position <= %s"
                             " ORDER BY position", (seal.from_position, seal.to_position)).fetchall()
        if len(sealed) != seal.event_count or (event["version"] > 1 and event["previous"] is None):
            # Part of the seal's leaves, or the event's previous hash, lies in an archived segment.
            raise ArchivedRange(_archived_under(conn, seal, event["position"]))
    index = [r["position"] for r in sealed].index(event["position"])
    leaves = [leaf_hash(bytes(r["hash"])) for r in sealed]
    return {
        "event": {
            "position": event["position"], "event_id": str(event["event_id"]), "stream_id": event["stream_id"],
            "stream_type": event["stream_type"], "version": event["version"], "type": event["type"],
            "schema_version": event["schema_version"], "payload_text": event["payload_text"],
            "metadata_text": event["metadata_text"], "recorded_at": event["recorded_at"].isoformat(),
            "previous_hash": bytes(event["previous"]).hex() if event["previous"] is not None else None,
            "hash": bytes(event["hash"]).hex(),
        },
        "seal": seal_json(seal),
        "leaf_index": index,
        "audit_path": [h.hex() for h in audit_path(leaves, index)],
    }


def seal_json(seal: Seal) -> dict[str, Any]:
    """A seal as JSON-ready data (bytes as hex)."""
    return {
        "seal_number": seal.seal_number, "from_position": seal.from_position, "to_position": seal.to_position,
        "event_count": seal.event_count, "merkle_root": seal.merkle_root.hex(),
        "previous_hash": seal.previous_hash.hex(), "seal_hash": seal.seal_hash.hex(), "key_id": seal.key_id,
        "public_key": seal.public_key.hex(), "signature": seal.signature.hex(),
        "sealed_at": seal.sealed_at.isoformat(),
    }


def _seal_from_json(data: dict[str, Any]) -> Seal:
    return Seal(
        seal_number=int(data["seal_number"]), from_position=int(data["from_position"]),
        to_position=int(data["to_position"]), event_count=int(data["event_count"]),
        merkle_root=bytes.fromhex(data["merkle_root"]), previous_hash=bytes.fromhex(data["previous_hash"]),
        seal_hash=bytes.fromhex(data["seal_hash"]), key_id=str(data["key_id"]),
        public_key=bytes.fromhex(data["public_key"]), signature=bytes.fromhex(data["signature"]),
        sealed_at=datetime.fromisoformat(data["sealed_at"]),
    )


def check_proof(proof: dict[str, Any], trusted_keys: frozenset[bytes] | None = None) -> list[str]:
    """Check an inclusion proof offline; return what fails (an empty list: the proof holds).

    1. the event's hash is recomputed from its content and previous hash;
    2. its leaf and audit path lead to the seal's Merkle root;
    3. the seal's hash and Ed25519 signature are over its content, by a trusted key if given.
    """
    try:
        event, seal = proof["event"], _seal_from_json(proof["seal"])
        previous = bytes.fromhex(event["previous_hash"]) if event.get("previous_hash") else None
        recomputed = event_hash(
            previous, UUID(event["event_id"]), event["stream_id"], event["stream_type"], int(event["version"]),
            event["type"], int(event["schema_version"]), event["payload_text"], event["metadata_text"],
            datetime.fromisoformat(event["recorded_at"]))
        path = [bytes.fromhex(h) for h in proof["audit_path"]]
        index = int(proof["leaf_index"])
    except (KeyError, TypeError, ValueError) as exc:
        return [f"the proof is not well formed: {exc!r}"]
    failures = []
    if recomputed.hex() != event["hash"]:
        failures.append(f"the event's content hashes to {recomputed.hex()}, not to its hash {event['hash']}")
    root = root_from_path(leaf_hash(recomputed), index, seal.event_count, path)
    if root != seal.merkle_root:
        failures.append("the audit path does not lead from the event to the seal's Merkle root")
    if not seal.from_position < int(event["position"]) <= seal.to_position:
        failures.append(f"position {event['position']} is outside the seal's range")
    if hashlib.sha256(seal.message()).digest() != seal.seal_hash:
        failures.append("the seal's hash does not match its content")
    if not signature_holds(seal):
        failures.append(f"the seal's signature does not verify under its key {seal.key_id}")
    elif trusted_keys is not None and seal.public_key not in trusted_keys:
        failures.append(f"the seal is signed by key {seal.key_id}, which is not a trusted key")
    return failures
