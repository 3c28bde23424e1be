"""How the log finds its rows by key (docs/log-segments.md): an event by its id, a stream's events.

No segment has an index of its own on event_id or stream_id; these are the matches that the
log-wide indexes serve, for every query that reads by id or by stream.
"""

from __future__ import annotations


def events_by_id(columns: str = "e.*", match: str = "= %s") -> str:
    """The events whose id matches (`= %s`, `= ANY(%s)`, ...), as `e`: the position from
    log_event_ids (events_event_id_key), then the row from the one segment holding it (events_pkey)."""
    return (f"SELECT {columns} FROM log_event_ids i JOIN events e ON e.position = i.position"
            f" WHERE i.event_id {match}")


def of_stream(column: str = "stream_id", value: str = "%s") -> str:
    """The match of one stream's events that events_stream_idx (hashtext(stream_id), version) serves;
    with the default `%s`, the stream id is passed twice (the hash's and the id's)."""
    return f"hashtext({column}) = hashtext({value}) AND {column} = {value}"
