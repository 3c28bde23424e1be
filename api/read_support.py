"""What the read routes share: their dependencies, JSON rows, queries, `?metadata.<field>=` filters, 404 or 410.

A read of a resource that is gone answers the same as a command on it: a stream that never
existed (or is of another kind) is `<type>_not_found` (404), a deleted one `<type>_deleted` (410).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NoReturn

from fastapi import Depends, Query, Request, Response

from api.deps import ChronicleState, MinPosition, Reader, authorize, etag, page_size, read_state, wait_for_position
from api.problems import Problem
from infrastructure.log_keys import of_stream
from projections.catalog import projectors_for

MAX_METADATA_FILTERS = 10
# Dynamic query parameters: `?metadata.<field>=` on the routes that take metadata_filters.
METADATA_PREFIX = "metadata."


def reading(wait: Callable[..., int | None], role: Any = Reader) -> Any:
    """A read route's state: the read server's, for a key whose role may read, once `wait`
    (a `min_position_for` dependency) has seen ?min_position= applied.

    One dependency that does the work of `read_state`, the role and `wait` itself: FastAPI solves
    each dependency of a request in the event loop, at a cost per dependency. Its routers check the
    role first too, so a caller without a key hears 401 before ?min_position= is read. Declare it
    as the route's last parameter: ?min_position= then stays its last query parameter.
    """
    permission = role.dependency.permission
    projections = wait.projections  # type: ignore[attr-defined]

    async def dependency(request: Request, response: Response, min_position: int | None = MinPosition) -> ChronicleState:
        authorize(request, permission)
        state = await read_state(request, response)
        await wait_for_position(state, min_position, projections)
        return state

    dependency.stands_for = (read_state, wait)  # type: ignore[attr-defined]  # for api.openapi_doc
    return Depends(dependency)


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


async def metadata_filters(request: Request) -> list[tuple[str, str]]:
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


@dataclass(frozen=True)
class PageAsked:
    """The page a list route is asked for: after `cursor` (None: the first), at most `limit` rows."""

    cursor: str | None
    limit: int


async def page_asked(cursor: str | None = Query(None, max_length=200), limit: int = Depends(page_size)) -> PageAsked:
    """`?cursor=` and `?limit=`, as every list route takes them."""
    return PageAsked(cursor, limit)


Paging = Depends(page_asked)


@dataclass(frozen=True)
class SnapshotQuery:
    """What a snapshot list (agents, chains) is asked for: an exact name, metadata fields, a page."""

    name: str | None
    metadata: list[tuple[str, str]]
    page: PageAsked


async def snapshot_query(
    name: str | None = Query(None, max_length=200),
    metadata: list[tuple[str, str]] = Depends(metadata_filters),
    page: PageAsked = Paging,
) -> SnapshotQuery:
    """`?name=`, `?metadata.<field>=`, `?cursor=` and `?limit=` of a snapshot list."""
    return SnapshotQuery(name, metadata, page)


# The stream's type, the position of its last event, and how far its projection's partition has
# applied the log: a stream with no read row is deleted only once its last event is applied.
_STREAM_PROJECTED = f"""
SELECT s.stream_type,
       (SELECT e.position FROM events e WHERE {of_stream('e.stream_id', 's.stream_id')}
        ORDER BY e.version DESC LIMIT 1) AS last_position,
       (SELECT c.position FROM projection p JOIN projection_checkpoint c ON c.projection = p.name
        WHERE p.name = %s AND c.partition = projection_partition(s.stream_id, p.partitions)) AS checkpoint
FROM streams s WHERE s.stream_id = %s
"""


def found(state: ChronicleState, response: Response, stream_type: str, stream_id: str,
          row: dict[str, Any] | None) -> dict[str, Any]:
    """The read row of a stream, its stream version set as the response's ETag; no row: `missing`."""
    if row is None:
        missing(state, stream_type, stream_id)
    response.headers["ETag"] = etag(row["stream_version"])
    return row


def missing(state: ChronicleState, stream_type: str, stream_id: str) -> NoReturn:
    """A stream without a read row: 410 `<type>_deleted` if its projection has applied its last event
    (so the row is gone because the stream is deleted), else 404 (unknown, or not projected yet)."""
    projectors = projectors_for(stream_type)
    row = _fetch_one(state, _STREAM_PROJECTED, (projectors[0].name if projectors else "", stream_id))
    if row is not None and row["stream_type"] == stream_type:
        if row["checkpoint"] is not None and row["checkpoint"] >= row["last_position"]:
            raise Problem(410, f"{stream_type}_deleted", f"{stream_type} {stream_id!r} is deleted",
                          field=f"{stream_type}_id")
        raise Problem(404, f"{stream_type}_not_found", f"{stream_type} {stream_id!r} is not projected yet"
                      " (read with ?min_position= to wait for it)", field=f"{stream_type}_id")
    raise Problem(404, f"{stream_type}_not_found", f"no {stream_type} {stream_id!r}", field=f"{stream_type}_id")
