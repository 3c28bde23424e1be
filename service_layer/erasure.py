"""Forgetting a data subject: destroy its key, purge the copies derived from its data, re-project.

History is not rewritten: the events keep their ciphertext, which no key opens any more. What
held the plaintext outside the log is purged: aggregate snapshots of the subject's streams,
stored Idempotency-Key responses naming them, this process's cached aggregates; the read
models are rebuilt from the log, where the subject's fields now read as erased.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from uuid import uuid4

from infrastructure.event_store import EventMetadata, EventStore
from projections.catalog import PROJECTORS
from service_layer.operator_events import record_operator_action_on

# Whether the subject has a live key, locked until the key is destroyed.
_LIVE_KEY = "SELECT wrapped_key IS NOT NULL AS live FROM data_keys WHERE subject_id = %s FOR UPDATE"
# Destroy the key material; a subject with no key yet gets a forgotten row, so later writes
# for it are stored erased too.
_DESTROY_KEY = """
INSERT INTO data_keys (subject_id, key_id, wrapped_key, forgotten_at) VALUES (%(subject)s, %(key_id)s, NULL, now())
ON CONFLICT (subject_id) DO UPDATE
    SET wrapped_key = NULL, forgotten_at = coalesce(data_keys.forgotten_at, EXCLUDED.forgotten_at)
"""
# The streams holding the subject's data, with their stream types.
_STREAMS = """
SELECT i.stream_id, s.stream_type FROM subject_streams i LEFT JOIN streams s USING (stream_id)
WHERE i.subject_id = %s ORDER BY i.stream_id
"""
# Stored Idempotency-Key responses of requests on those streams, or naming them in their body.
_PURGE_RESPONSES = """
DELETE FROM idempotency_keys k WHERE EXISTS (
    SELECT 1 FROM unnest(%s::text[]) AS s(stream_id)
    WHERE strpos(k.path, s.stream_id) > 0 OR position(convert_to(s.stream_id, 'UTF8') IN coalesce(k.body, ''::bytea)) > 0)
"""


@dataclass(frozen=True)
class Forgotten:
    """What forgetting a subject did."""

    subject_id: str
    key_destroyed: bool
    streams: list[str]
    snapshots_deleted: int
    responses_deleted: int
    position: int
    rebuilds: dict[str, int | None] = field(default_factory=dict)


def forget_subject(
    store: EventStore, subject_id: str, *, actor_id: str, actor_type: str = "user",
    correlation_id: str | None = None, request_rebuild: Callable[[str], int | None] | None = None,
    evict: Callable[[list[str]], None] | None = None,
) -> Forgotten:
    """Destroy a subject's key and purge its derived copies in one transaction, with its
    `subject.forgotten` event; then ask `request_rebuild` to rebuild each affected projection.

    Forgetting twice is allowed: the second finds no live key and purges again.
    """
    with store.transaction() as conn:
        live = conn.execute(_LIVE_KEY, (subject_id,)).fetchone()
        destroyed = bool(live and live["live"])
        conn.execute(_DESTROY_KEY, {"subject": subject_id, "key_id": uuid4()})
        rows = conn.execute(_STREAMS, (subject_id,)).fetchall()
        streams = [row["stream_id"] for row in rows]
        snapshots = conn.execute("DELETE FROM snapshots WHERE stream_id = ANY(%s)", (streams,)).rowcount
        responses = conn.execute(_PURGE_RESPONSES, (streams,)).rowcount if streams else 0
        stream_types = {row["stream_type"] for row in rows if row["stream_type"]}
        projections = sorted(name for name, p in PROJECTORS.items() if stream_types & set(p.stream_types))
        details: dict[str, Any] = {
            "key_destroyed": destroyed, "streams": len(streams), "snapshots_deleted": snapshots,
            "responses_deleted": responses, "projections": projections,
        }
        metadata = EventMetadata(actor_id=actor_id, actor_type=actor_type, correlation_id=correlation_id)
        result = record_operator_action_on(conn, store, "subject.forgotten", f"subject:{subject_id}", details, metadata)
    store.committed([result])
    if evict is not None:
        evict(streams)
    rebuilds = {name: request_rebuild(name) for name in projections} if request_rebuild else {}
    return Forgotten(subject_id, destroyed, streams, snapshots, responses, result.position, rebuilds)
