"""The event store's reads: a stream, the log in position order, its head and safe position.

Reads go through the SQL functions of schema/0001_event_store.sql.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from infrastructure.db import direct_url

from domain.event_types import EventTypeRegistry
from infrastructure.log_keys import of_stream
from infrastructure.personal_data import reveal_payloads
from infrastructure.store_types import NOTIFY_CHANNEL, LogBlocker, RecordedEvent


class SchemaChanged(RuntimeError):
    """Registered payload shapes that differ from the schema stored for their version."""

    def __init__(self, changed: list[str]) -> None:
        super().__init__("the payload schema of " + ", ".join(changed) + " changed since it was stored:"
                         " give the type a new schema_version and an upcaster from the old one")
        self.changed = changed


class StoreReads:
    """Reads of streams and of the global log."""

    pool: ConnectionPool
    registry: EventTypeRegistry

    # -- reading ---------------------------------------------------------------------------

    def read_stream(
        self, stream_id: str, from_version: int = 1, to_version: int | None = None
    ) -> list[RecordedEvent]:
        """A stream's events from `from_version` to `to_version` inclusive, in version order."""
        with self.pool.connection() as conn:
            rows = conn.execute(
                # Both ends always bound, so even a generic plan is an index range scan.
                f"SELECT * FROM events WHERE {of_stream()} AND version >= %s AND version <= %s"
                " ORDER BY version",
                (stream_id, stream_id, from_version, 2**63 - 1 if to_version is None else to_version),
            ).fetchall()
            return self._revealed(conn, rows)

    def read_all(
        self,
        after: int = 0,
        limit: int = 1000,
        types: Sequence[str] | None = None,
        log_name: str | None = None,
    ) -> list[RecordedEvent]:
        """Up to `limit` events after the checkpoint `after`, in position order, never skipping one.

        Only events below the safe position are returned, so an append that commits late
        is read on a later call rather than lost.
        """
        with self.pool.connection() as conn:
            rows = conn.execute(
                "SELECT * FROM read_log(%s, %s, %s, %s)",
                (after, limit, list(types) if types is not None else None, log_name),
            ).fetchall()
            return self._revealed(conn, rows)

    def head(self, log_name: str | None = None) -> int:
        """The position of the newest event a reader can see now (0 for an empty log)."""
        with self.pool.connection() as conn:
            row = conn.execute(
                "SELECT coalesce(max(position), 0) AS head FROM events"
                " WHERE position <= (SELECT safe_position()) AND (%s::text IS NULL OR log_name = %s::text)",
                (log_name, log_name),
            ).fetchone()
        return row["head"]

    def safe_position(self) -> int:
        """The position up to which the log is complete: nothing at or below it can still appear."""
        with self.pool.connection() as conn:
            return conn.execute("SELECT safe_position() AS safe").fetchone()["safe"]

    def stream_version(self, stream_id: str) -> int:
        """A stream's current version, 0 if it has no events."""
        with self.pool.connection() as conn:
            row = conn.execute("SELECT version FROM streams WHERE stream_id = %s", (stream_id,)).fetchone()
        return row["version"] if row else 0

    def blockers(self) -> list[LogBlocker]:
        """Open transactions holding the log back, the one holding it furthest back first."""
        with self.pool.connection() as conn:
            rows = conn.execute("SELECT * FROM log_blockers()").fetchall()
        return [LogBlocker(**row) for row in rows]

    def wait_for_events(self, after: int, timeout: float, log_name: str | None = None) -> bool:
        """Block until the log has an event after `after` (True) or `timeout` seconds pass (False).

        Uses LISTEN/NOTIFY, so a waiting reader does not poll.
        """
        deadline = time.monotonic() + timeout
        with psycopg.connect(direct_url(self.pool), autocommit=True, row_factory=dict_row) as conn:
            conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
            while True:
                if self.head(log_name) > after:
                    return True
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                # A notification means a commit; a late commit below it may still hold the
                # safe position back, so re-check the head rather than trust the wake-up.
                for _ in conn.notifies(timeout=min(remaining, 1.0), stop_after=1):
                    pass

    def register_definitions(self) -> int:
        """Write each registered type's stored-payload JSON Schema to `event_definitions`, once.

        A row is never overwritten: a (type, schema version) whose payload shape changed raises
        SchemaChanged naming it (give the type a new schema version and an upcaster).
        """
        from infrastructure.eventsourcing_mapper import ENVELOPE

        schemas = {(t.name, t.schema_version): (t.stream_type, t.stored_schema(ENVELOPE)) for t in self.registry}
        with self.pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO event_definitions (type, schema_version, stream_type, json_schema)"
                " VALUES (%s, %s, %s, %s::jsonb) ON CONFLICT (type, schema_version) DO NOTHING",
                [(name, version, stream_type, json.dumps(schema))
                 for (name, version), (stream_type, schema) in schemas.items()])
            stored = conn.execute(
                "SELECT type, schema_version, json_schema FROM event_definitions WHERE type = ANY(%s)",
                ([name for name, _ in schemas],)).fetchall()
        changed = [f"{r['type']} v{r['schema_version']}" for r in stored
                   if (r["type"], r["schema_version"]) in schemas
                   and r["json_schema"] != schemas[(r["type"], r["schema_version"])][1]]
        if changed:
            raise SchemaChanged(changed)
        return len(schemas)

    def _revealed(self, conn: psycopg.Connection, rows: list[dict[str, Any]]) -> list[RecordedEvent]:
        """The rows as recorded events, upcast, their personal fields decrypted (erased if forgotten)."""
        events = [self._recorded(row) for row in rows]
        reveal_payloads(conn, self.registry, ((e.type, e.payload) for e in events))
        return events

    def _recorded(self, row: dict[str, Any]) -> RecordedEvent:
        schema_version, payload = self.registry.upcast(row["type"], row["schema_version"], row["payload"])
        return RecordedEvent(
            position=row["position"],
            event_id=row["event_id"],
            stream_id=row["stream_id"],
            stream_type=row["stream_type"],
            version=row["version"],
            type=row["type"],
            schema_version=schema_version,
            payload=payload,
            metadata=row["metadata"],
            log_name=row["log_name"],
            recorded_at=row["recorded_at"],
        )
