"""The auditors' pages: the event log with every filter of GET /v1/events, one event with its
causation tree, a stream's timeline with time travel and diff, documents, and integrity.

They call the functions the API's routes call (service_layer/event_log.py, document_reads.py,
the workspace's history and diff), with the same parameter bounds.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import HTMLResponse
from pydantic import StringConstraints

from api.deps import MAX_PAGE, decode_cursor, page_of
from api.problems import Problem
from api.routes_audit import _ID
from api.routes_log import log_page
from api.routes_reads import IDENT, MAX_FILTER_VALUES
from console.auth import Viewer
from console.web import need, page, query, state_of
from service_layer import event_log
from service_layer.document_reads import DocumentFilter, documents_page, tag_history
from infrastructure.log_status import read_log_status
from service_layer.event_log import EventFilter

router = APIRouter()
Text = list[Annotated[str, StringConstraints(max_length=100)]]
Ident = list[Annotated[str, StringConstraints(pattern=IDENT)]]
WORKSPACE_TYPES = ("chain", "document", "agent")


def _blank(value: str | None) -> str | None:
    """An empty form field is no filter."""
    return value or None


@router.get("/events", response_class=HTMLResponse)
def events(
    request: Request,
    _: Viewer = Depends(need("audit")),
    stream: str | None = Query(None, max_length=200),
    stream_type: Text | None = Query(None, max_length=50),
    type: Text | None = Query(None, max_length=50),
    actor: str | None = Query(None, max_length=200),
    session: str | None = Query(None, max_length=200),
    correlation_id: str | None = Query(None, max_length=200),
    since: str | None = Query(None, max_length=40),
    until: str | None = Query(None, max_length=40),
    cursor: str | None = Query(None, max_length=200),
    limit: int = Query(50, ge=1, le=MAX_PAGE),
) -> HTMLResponse:
    """The event log, filtered as GET /v1/events filters it, a page at a time."""
    import re

    if stream and not re.match(_ID, stream):
        raise Problem(422, "invalid_query", "stream: not a stream id (letters, digits and ._:@/+=-)")
    filters = EventFilter(stream=_blank(stream), stream_types=[t for t in stream_type or [] if t],
                          types=[t for t in type or [] if t], actor=_blank(actor), session=_blank(session),
                          correlation_id=_blank(correlation_id), since=_time(since, "since"),
                          until=_time(until, "until"))
    after = (decode_cursor(cursor, (int,)) or (0,))[0]
    pool = state_of(request).pool
    with pool.connection() as conn:
        log = read_log_status(conn)  # before the page's read: a late commit is never passed over
    rows, next_cursor = log_page(pool, log, filters, after, limit)
    given = dict(stream=stream, stream_type=stream_type or [], type=type or [], actor=actor, session=session,
                 correlation_id=correlation_id, since=since, until=until, limit=limit if limit != 50 else None)
    return page(request, "events.html", events=rows, log=log, filters=given,
                next_link=f"/console/events?{query(**given, cursor=next_cursor)}" if next_cursor else None,
                first_link=f"/console/events?{query(**given)}" if cursor else None)


def _time(value: str | None, name: str) -> datetime | None:
    """An ISO 8601 time from a filter field (a form's datetime-local value has no zone: UTC)."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise Problem(422, "invalid_query", f"{name}: not an ISO 8601 time, e.g. 2025-01-01T00:00:00Z") from None
    if parsed.tzinfo is None:
        from datetime import timezone

        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed


@router.get("/events/{event_id}", response_class=HTMLResponse)
def event(request: Request, event_id: UUID, _: Viewer = Depends(need("audit")),
          depth: int = Query(10, ge=1, le=50)) -> HTMLResponse:
    """One event, pretty-printed, with what caused it and what it caused."""
    chain = event_log.causation(state_of(request).pool, event_id, depth)
    if chain is None:
        raise Problem(404, "event_not_found", f"There is no event {event_id}.")
    return page(request, "event.html", **chain, depth=depth)


@router.get("/streams/{stream_id:path}", response_class=HTMLResponse)
def stream(
    request: Request,
    stream_id: str = Path(..., pattern=_ID),
    _: Viewer = Depends(need("audit")),
    version: int | None = Query(None, ge=1, le=2**62),
    from_version: int | None = Query(None, ge=1, le=2**62, alias="from"),
    to_version: int | None = Query(None, ge=1, le=2**62, alias="to"),
    cursor: str | None = Query(None, max_length=200),
) -> HTMLResponse:
    """A stream's versions as a timeline; its state at ?version=, the diff ?from= ?to=; a document's tags."""
    state = state_of(request)
    row = event_log.stream_row(state.pool, stream_id)
    if row is None:
        raise Problem(404, "stream_not_found", f"There is no stream {stream_id!r}.")
    after = (decode_cursor(cursor, (int,)) or (0,))[0]
    timeline, next_cursor = page_of(event_log.stream_events(state.pool, stream_id, after, None, 200), 200,
                                    "stream_version")
    workspace = row["stream_type"] in WORKSPACE_TYPES and _is_uuid(stream_id)
    at = diff = None
    if workspace and version is not None:
        at = state.service.state_at(stream_id, version=version)
    if workspace and from_version is not None and to_version is not None:
        diff = state.service.diff(stream_id, from_version, to_version)
    tags = tag_history(state.pool, stream_id) if row["stream_type"] == "document" else None
    return page(request, "stream.html", stream=row, timeline=timeline, workspace=workspace, at=at, diff=diff,
                tags=tags, version=version, from_version=from_version, to_version=to_version,
                next_link=f"/console/streams/{stream_id}?{query(cursor=next_cursor)}" if next_cursor else None)


def _is_uuid(value: str) -> bool:
    try:
        UUID(value)
    except ValueError:
        return False
    return True


@router.get("/documents", response_class=HTMLResponse)
def documents(
    request: Request,
    _: Viewer = Depends(need("read")),
    namespace: list[str] | None = Query(None, max_length=MAX_FILTER_VALUES),
    type: list[str] | None = Query(None, max_length=MAX_FILTER_VALUES),
    tag: list[str] | None = Query(None, max_length=MAX_FILTER_VALUES),
    session: str | None = Query(None, max_length=200),
    cursor: str | None = Query(None, max_length=200),
) -> HTMLResponse:
    """Documents, newest first, by namespace, type, tag and session (as GET /v1/documents)."""
    import re

    values = {name: [v for v in given or [] if v] for name, given in
              (("namespace", namespace), ("type", type), ("tag", tag))}
    for name, given in values.items():
        for value in given:
            if not re.match(IDENT, value):
                raise Problem(422, "invalid_query", f"{name}: {value[:100]!r} is not a name (a-z, 0-9, _.:-)")
    after = decode_cursor(cursor, (int,))
    filters = DocumentFilter(namespaces=values["namespace"], types=values["type"], tags=values["tag"],
                             session=_blank(session))
    rows, next_cursor = page_of(documents_page(state_of(request).pool, filters, after[0] if after else None, 50),
                                50, "created_position")
    given = {**values, "session": session}
    return page(request, "documents.html", documents=rows, filters=given,
                next_link=f"/console/documents?{query(**given, cursor=next_cursor)}" if next_cursor else None)


@router.get("/integrity", response_class=HTMLResponse)
def integrity(request: Request, _: Viewer = Depends(need("audit"))) -> HTMLResponse:
    """Seals of the log, once they are configured; until then a page that says so."""
    with state_of(request).pool.connection() as conn:
        table = conn.execute("SELECT to_regclass('seals') IS NOT NULL AS present").fetchone()["present"]
        seals = conn.execute("SELECT * FROM seals ORDER BY 1 DESC LIMIT 50").fetchall() if table else []
    return page(request, "integrity.html", configured=table, seals=seals)
