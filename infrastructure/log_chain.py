"""Each stream's hash chain, as `chronicle verify` and an archive's restore both check it.

An event's hash covers its content and the hash of the previous event of its stream
(docs/tamper-evidence.md); these are the two steps of that check: find the previous event, and
recompute an event's hash from its stored row.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import psycopg
from psycopg.rows import tuple_row

from infrastructure.log_hashes import event_hash
from infrastructure.log_keys import of_stream


def row_hash(previous: bytes | None, row: Mapping[str, Any]) -> bytes:
    """The hash an event's stored row (payload and metadata as their stored text) recomputes to,
    chained to `previous`: what its stored hash must be."""
    return event_hash(previous, row["event_id"], row["stream_id"], row["stream_type"], row["version"], row["type"],
                      row["schema_version"], row["payload"], row["metadata"], row["recorded_at"])


def earlier_event(conn: psycopg.Connection, stream: str, version: int) -> tuple[int, bytes, int] | None:
    """The stream's last event in the log before `version`, as (version, hash, position); None when
    the log holds none (it was archived, or is gone)."""
    # Served by events_stream_idx (hashtext(stream_id), version), read backwards.
    with conn.cursor(row_factory=tuple_row) as cur:
        found = cur.execute(f"SELECT version, hash, position FROM events WHERE {of_stream()} AND version < %s"
                            " ORDER BY version DESC LIMIT 1", (stream, stream, version)).fetchone()
    return None if found is None else (found[0], bytes(found[1]), found[2])
