"""The auditors' routes: the event log with filters, a stream's events, causation chains."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Path, Query, Response
from pydantic import StringConstraints

from api.deps import Auditor, ChronicleState, decode_cursor, etag, min_position_param, page_of, read_log_bound
from api.problems import Problem
from api.read_support import PageAsked, Paging, reading
from api.routes_log import check_stream_page, log_page, missing_event_problem
from api.schemas import ExactRoute, CausationOut, EventOut, EventPage, StreamEventsOut
from service_layer import event_log
from service_layer.event_log import EventFilter

# The role is checked before any query parameter: a caller without a key hears 401 first.
router = APIRouter(prefix="/v1", tags=["audit"], route_class=ExactRoute, dependencies=[Auditor])
_ID = r"^[A-Za-z0-9][A-Za-z0-9._:@/+=-]{0,199}$"
# Each route's state, for an auditor, after ?min_position= reached the log.
AUDIT = reading(min_position_param, Auditor)


@router.get("/events", summary="The event log, filtered, in log order")
def list_events(
    response: Response,
    stream: str | None = Query(None, pattern=_ID, description="stream id"),
    stream_type: list[Annotated[str, StringConstraints(max_length=100)]] | None = Query(
        None, max_length=50, description="stream type, repeatable (any of them)"),
    type: list[Annotated[str, StringConstraints(max_length=100)]] | None = Query(
        None, description="event type, repeatable (any of them)", max_length=50),
    actor: str | None = Query(None, max_length=200, description="actor id"),
    session: str | None = Query(None, max_length=200, description="session id"),
    correlation_id: str | None = Query(None, max_length=200),
    since: datetime | None = Query(None, description="recorded at or after (ISO 8601)"),
    until: datetime | None = Query(None, description="recorded before (ISO 8601)"),
    page: PageAsked = Paging,
    state: ChronicleState = AUDIT,
) -> EventPage:
    """Events matching every filter given, oldest first, a page at a time.

    Only events below the safe position are listed, so a cursor never skips a late commit. The
    X-Chronicle-Log-Head and X-Chronicle-Safe-Position headers say how far that is, and
    X-Chronicle-Log-Held-Back, present only while an open append holds readers below the head,
    since when.
    """
    after = (decode_cursor(page.cursor, (int,)) or (0,))[0]
    filters = EventFilter(stream=stream, stream_types=stream_type or [], types=type or [], actor=actor,
                          session=session, correlation_id=correlation_id, since=since, until=until)
    log = read_log_bound(state)
    response.headers.update(log.headers())
    events, next_cursor = log_page(state.pool, log, filters, after, page.limit)
    return {"events": events, "next_cursor": next_cursor}


@router.get("/streams/{stream_id:path}/events", summary="One stream's events, in version order")
def stream_events(
    response: Response,
    stream_id: str = Path(..., pattern=_ID),
    from_version: int = Query(1, ge=1),
    to_version: int | None = Query(None, ge=1),
    page: PageAsked = Paging,
    state: ChronicleState = AUDIT,
) -> StreamEventsOut:
    """A stream's events from `from_version`, with its current version as the ETag.

    An unknown stream is 404.
    """
    after = (decode_cursor(page.cursor, (int,)) or (from_version - 1,))[0]
    stream = event_log.stream_row(state.pool, stream_id)
    if stream is None:
        raise Problem(404, "stream_not_found", f"no stream {stream_id!r}", field="stream_id")
    events = event_log.stream_events(state.pool, stream_id, after, to_version, page.limit)
    events, next_cursor = page_of(events, page.limit, "stream_version")
    with state.pool.connection() as conn:  # versions in an archived segment: 410 naming it
        check_stream_page(conn, after, events, min(stream["version"], to_version or stream["version"],
                                                   after + page.limit))
    response.headers["ETag"] = etag(stream["version"])
    return {
        "stream_id": stream_id,
        "stream_type": stream["stream_type"],
        "stream_version": stream["version"],
        "events": events,
        "next_cursor": next_cursor,
    }


@router.get("/events/{event_id}", summary="One event")
def get_event(event_id: UUID, state: ChronicleState = AUDIT) -> EventOut:
    """One event by its id; 404 if there is none."""
    event = event_log.get_event(state.pool, event_id)
    if event is None:
        with state.pool.connection() as conn:
            raise missing_event_problem(conn, event_id)  # 410 naming its archive, else 404
    return event


@router.get("/events/{event_id}/causation", summary="What caused an event, and what it caused")
def causation(
    event_id: UUID,
    depth: int = Query(10, ge=1, le=50, description="how many generations of effects to follow"),
    state: ChronicleState = AUDIT,
) -> CausationOut:
    """The causation chain through an event: its causes back to the root, and its effects.

    Causes follow `metadata.causation_id`; effects are the events naming it, generation by
    generation, up to `depth` generations and 1000 events.
    """
    chain = event_log.causation(state.pool, event_id, depth)
    if chain is None:
        with state.pool.connection() as conn:
            raise missing_event_problem(conn, event_id)  # 410 naming its archive, else 404
    return chain
