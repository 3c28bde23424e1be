"""The one SQL statement an append runs: claim the versions, hold back readers, insert.

One statement, not a plpgsql function: psycopg prepares it on each connection after a few
uses, and the server runs about 30% more of them per second than of the same steps in plpgsql
(pgbench, 8 writers, one event each; see schema/0008_append_statement.sql).
It returns one (position, version) row per event, or no row when the stream was not at the
expected version or is of another stream type; nothing is then written and no position is taken.
Parameters are named: stream_id, stream_type, expected, n (the number of events), metadata,
log_name, and the events' fields: event_id, type, schema_version, payload for one event, or
the array literals event_ids, types, schema_versions, payloads for several.
"""

from __future__ import annotations

from typing import Literal

ExpectedKind = Literal["version", "no_stream", "any"]

# Claim the versions: each form returns the stream's new version, or no row. The stream's row
# lock orders the writers of one stream, so a writer whose expected version has gone finds
# no row here, before it takes any position.
CLAIMS: dict[ExpectedKind, str] = {
    # At version N: only if the stream is at N.
    "version": """
        UPDATE streams AS s SET version = s.version + %(n)s, updated_at = now()
        WHERE s.stream_id = %(stream_id)s AND s.version = %(expected)s
          AND s.stream_type = %(stream_type)s
        RETURNING s.version""",
    # No stream yet: only if the stream has no row.
    "no_stream": """
        INSERT INTO streams (stream_id, stream_type, version)
        VALUES (%(stream_id)s, %(stream_type)s, %(n)s)
        ON CONFLICT (stream_id) DO NOTHING
        RETURNING version""",
    # Any version: create the stream, or move it on if it is of this stream type.
    "any": """
        INSERT INTO streams AS s (stream_id, stream_type, version)
        VALUES (%(stream_id)s, %(stream_type)s, %(n)s)
        ON CONFLICT (stream_id) DO UPDATE SET version = s.version + EXCLUDED.version, updated_at = now()
        WHERE s.stream_type = EXCLUDED.stream_type
        RETURNING s.version""",
}

# Then hold back readers and insert. The shared advisory lock is keyed at the next position,
# in Chronicle's own key space (log_lock_key, schema/0009_reader_lock_space.sql), and taken
# before any position is (the INSERT's rows need `held`'s row, and each row's position default
# is drawn as it is inserted). safe_position() never reads at or past the smallest key an
# append still holds, so a reader cannot skip an append that commits late.
# The lock is only tried, never waited for: where another session holds that key exclusively,
# hold_log_position() leaves a hole at that position and holds the next one instead.
_HOLD = """
    held AS (
        SELECT c.version,
               CASE WHEN pg_try_advisory_xact_lock_shared(
                             log_lock_key(CASE WHEN q.is_called THEN q.last_value + 1 ELSE q.last_value END))
                    THEN true ELSE hold_log_position() END
        FROM claimed c, events_position_seq q
    )"""

# One event, as plain parameters: the common case, and cheaper for both sides than arrays.
_INSERT_ONE = """
    INSERT INTO events (event_id, stream_id, stream_type, version, type, schema_version,
                        payload, metadata, log_name)
    SELECT %(event_id)s, %(stream_id)s, %(stream_type)s, h.version, %(type)s,
           %(schema_version)s, %(payload)s::jsonb, %(metadata)s::jsonb, %(log_name)s
    FROM held h
    RETURNING position, version"""

# Several events, as arrays: their versions follow on from the claimed ones, in the order given.
_INSERT_MANY = """
    INSERT INTO events (event_id, stream_id, stream_type, version, type, schema_version,
                        payload, metadata, log_name)
    SELECT e.event_id, %(stream_id)s, %(stream_type)s, h.version - %(n)s + e.ord, e.type,
           e.schema_version, e.payload, %(metadata)s::jsonb, %(log_name)s
    FROM held h,
         unnest(%(event_ids)s::uuid[], %(types)s::text[], %(schema_versions)s::int[],
                %(payloads)s::text[]::jsonb[])
             WITH ORDINALITY AS e(event_id, type, schema_version, payload, ord)
    ORDER BY e.ord
    RETURNING position, version"""

# The statement for an expected-version kind and whether the append holds one event.
APPEND_SQL: dict[tuple[ExpectedKind, bool], str] = {
    (kind, one): f"WITH claimed AS ({claim}\n    ),{_HOLD}{_INSERT_ONE if one else _INSERT_MANY}"
    for kind, claim in CLAIMS.items()
    for one in (True, False)
}
