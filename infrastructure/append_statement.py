"""The one SQL statement an append runs: a call of the log's append function.

The application login may not write `events` or `streams` itself (schema/0016): it appends
through append_event (one event) or append_events (several), SECURITY DEFINER functions that
claim the versions, hold back readers, hash each event onto its stream's chain and insert.
psycopg prepares the call on each connection after a few uses, and plpgsql keeps the plans
of the function's statements for the session.
A call returns one (position, version) row per event, or no row when the stream was not at the
expected version or is of another stream type; nothing is then written and no position is taken.
Parameters are positional (cheaper for the client to bind than named ones), in this order:
kind (ExpectedKind), stream_id, stream_type, expected, metadata, log_name, and the events'
fields: event_id, type, schema_version, payload for one event, or the array literals of
event ids, types, schema versions and payloads for several.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

# How the expected version is checked: at version N, no stream yet, or any version.
ExpectedKind = Literal["version", "no_stream", "any"]

# One event, as plain parameters: the common case, and cheaper for both sides than arrays.
_APPEND_ONE = """
    SELECT * FROM append_event(%s, %s, %s, %s, %s::jsonb, %s, %s, %s, %s, %s::jsonb)"""

# Several events, as arrays: their versions follow on from the claimed ones, in the order given.
_APPEND_MANY = """
    SELECT * FROM append_events(%s, %s, %s, %s, %s::jsonb, %s, %s::uuid[], %s::text[], %s::int[],
                                %s::text[]::jsonb[])"""

# The statement for whether the append holds one event.
APPEND_SQL: dict[bool, str] = {True: _APPEND_ONE, False: _APPEND_MANY}


def array_literal(items: Iterable[str]) -> str:
    """A PostgreSQL array literal of quoted, escaped elements (never NULL).

    Built here because it is several times cheaper than adapting a Python list per append.
    """
    quoted = ('"' + item.replace("\\", "\\\\").replace('"', '\\"') + '"' for item in items)
    return "{" + ",".join(quoted) + "}"
