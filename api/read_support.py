"""What the read routes share: JSON rows, queries, `?metadata.<field>=` filters, 404 or 410.

A read of a resource that is gone answers the same as a command on it: a stream that never
existed (or is of another kind) is `<type>_not_found` (404), a deleted one `<type>_deleted` (410).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, NoReturn

from fastapi import Request

from api.deps import ChronicleState
from api.problems import Problem

MAX_METADATA_FILTERS = 10
# Dynamic query parameters: `?metadata.<field>=` on the routes that take metadata_filters.
METADATA_PREFIX = "metadata."


def _json(row: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in row.items():
        if isinstance(value, datetime):
            value = value.isoformat()
        elif key == "last_event_id" and value is not None:
            value = str(value)
        out[key] = value
    return out


def _fetch_one(state: ChronicleState, sql: str, params: tuple[Any, ...]) -> dict[str, Any] | None:
    with state.pool.connection() as conn:
        return conn.execute(sql, params).fetchone()


def _fetch_all(state: ChronicleState, sql: str, params: Any) -> list[dict[str, Any]]:
    with state.pool.connection() as conn:
        return conn.execute(sql, params).fetchall()


def metadata_filters(request: Request) -> list[tuple[str, str]]:
    """`?metadata.<field>=<value>` query parameters, at most ten, field names bounded."""
    filters = []
    for name, value in request.query_params.multi_items():
        if name.startswith(METADATA_PREFIX):
            field = name[len(METADATA_PREFIX):]
            if not field or len(field) > 100 or len(value) > 500:
                raise Problem(422, "invalid_metadata_filter", "metadata filters are metadata.<field>=<value>, "
                              "field up to 100 and value up to 500 characters", field=name[:120])
            filters.append((field, value))
    if len(filters) > MAX_METADATA_FILTERS:
        raise Problem(422, "too_many_filters", f"at most {MAX_METADATA_FILTERS} metadata filters", field="metadata")
    return filters


def _metadata_sql(column: str, filters: list[tuple[str, str]], clauses: list[str], params: list[Any]) -> None:
    """Containment clauses (GIN-indexed) matching a value as text, or as the JSON it spells."""
    for field, value in filters:
        candidates = [json.dumps({field: value})]
        try:
            parsed = json.loads(value)
            if not isinstance(parsed, str):
                candidates.append(json.dumps({field: parsed}))
        except ValueError:
            pass
        clauses.append("(" + " OR ".join(f"{column} @> %s::jsonb" for _ in candidates) + ")")
        params.extend(candidates)


def missing(state: ChronicleState, stream_type: str, stream_id: str) -> NoReturn:
    """Raise 410 `<type>_deleted` if the stream exists (its read row is gone: it is deleted), else 404."""
    row = _fetch_one(state, "SELECT stream_type FROM streams WHERE stream_id = %s", (stream_id,))
    if row is not None and row["stream_type"] == stream_type:
        raise Problem(410, f"{stream_type}_deleted", f"{stream_type} {stream_id!r} is deleted",
                      field=f"{stream_type}_id")
    raise Problem(404, f"{stream_type}_not_found", f"no {stream_type} {stream_id!r}", field=f"{stream_type}_id")
