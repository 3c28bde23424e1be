"""The event contract: every event type and schema version with the JSON Schema of its stored payload.

Read back from `event_definitions`, which the API writes at start and never overwrites: a
changed payload shape is a new schema version with an upcaster, so an old version's schema
stays listed and still describes the events stored under it.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query

from api.deps import ChronicleState, Describer, chronicle
from api.schemas import ExactRoute
from api.schemas_feed import EventTypeList
from domain.event_types import registry

router = APIRouter(prefix="/v1", tags=["subscriptions"], route_class=ExactRoute)


@router.get("/event-types", summary="Event types and the JSON Schemas of their stored payloads")
def event_types(
    state: ChronicleState = Depends(chronicle),
    _: Any = Describer,
    stream_type: str | None = Query(None, max_length=100, description="only this stream type's"),
) -> EventTypeList:
    """Every (type, schema version) stored, with its stream type and payload schema; `current` marks
    the version events are appended at now (events of an older one are upcast when read)."""
    current = registry.schema_versions()
    with state.pool.connection() as conn:
        rows = conn.execute(
            "SELECT type, schema_version, stream_type, json_schema FROM event_definitions"
            " WHERE %(s)s::text IS NULL OR stream_type = %(s)s ORDER BY type, schema_version",
            {"s": stream_type}).fetchall()
    return {"event_types": [{**row, "current": current.get(row["type"]) == row["schema_version"]} for row in rows]}
