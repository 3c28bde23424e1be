"""The log as a live feed: GET /v1/subscribe (Server-Sent Events or NDJSON), and the open feeds.

A feed sends the history after a position, then each event as it commits, in position order
and never past the safe position, so it never skips an event whose append commits late. It
reads the log a bounded page at a time and sends a page only when the client has taken the
last one (the server's writes wait on the connection), so a slow client falls behind and
catches up from the log; nothing is buffered for it.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import StringConstraints

from api.deps import MAX_POSITION, ChronicleState, Operator, Subscriber, chronicle
from api.problems import Problem
from api.routes_log import check_feed_start
from api.schemas import ExactRoute
from api.schemas_feed import SubscriptionList
from domain.event_types import registry
from infrastructure.feed_reads import FeedFilter, FeedPage, read_page
from infrastructure.log_listener import listener_of
from service_layer.subscriptions import (
    close_subscription, list_subscriptions, open_subscription, touch_subscription,
)

router = APIRouter(prefix="/v1", tags=["subscriptions"], route_class=ExactRoute)
logger = logging.getLogger("chronicle.api")
SSE = "text/event-stream"
NDJSON = "application/x-ndjson"
# Events read (and sent as one write) per page.
PAGE_EVENTS = 500
_ID = r"^[A-Za-z0-9][A-Za-z0-9._:@/+=-]{0,199}$"
Name = Annotated[str, StringConstraints(max_length=100)]

STREAM_DOC = {
    "description": "History after the position, then live events, each once, in position order.",
    "content": {
        # Each SSE event (a heartbeat comment is not one): `id` the position, `event` the type,
        # `data` the event as GET /v1/events lists it, as JSON text.
        SSE: {"schema": {"type": "object", "properties": {
            "id": {"type": "string"}, "event": {"type": "string"}, "data": {"type": "string"},
        }, "required": ["id", "event", "data"]}, "example": (
            'id: 42\nevent: document.created\ndata: {"position": 42, "type": "document.created", ...}\n\n'
            ": heartbeat\n\n")},
        NDJSON: {"schema": {"$ref": "#/components/schemas/EventOut"}, "example": (
            '{"position": 42, "type": "document.created", ...}\n{"heartbeat": true, "position": 42}\n')},
    },
}


def feed_format(accept: str | None) -> str:
    """The format the client accepts: SSE (the default) or NDJSON; anything else is 406."""
    kinds = [part.split(";")[0].strip().lower() for part in (accept or "").split(",") if part.strip()]
    if not kinds or SSE in kinds or "*/*" in kinds or "text/*" in kinds:
        return "sse"
    if NDJSON in kinds or "application/*" in kinds:
        return "ndjson"
    raise Problem(406, "not_acceptable", f"the feed is {SSE} or {NDJSON}; Accept asked for {accept!r}",
                  field="Accept")


def start_position(after: int, last_event_id: str | None) -> int:
    """Where the feed starts: after Last-Event-ID when the client sends it (a reconnect), else `after`."""
    if last_event_id is None or not last_event_id.strip():
        return after
    value = last_event_id.strip()
    if not value.isdigit() or int(value) > MAX_POSITION:
        raise Problem(422, "invalid_header", "Last-Event-ID must be a log position (an id this feed sent)",
                      field="Last-Event-ID")
    return int(value)


def feed_filter(types: list[str], stream_types: list[str], stream_ids: list[str]) -> FeedFilter:
    """The filters, each value checked: an unknown event or stream type would never match, so it is 422."""
    known_types = {t.name for t in registry}
    for name in types:
        if name not in known_types:
            raise Problem(422, "unknown_event_type", f"no event type {name!r} (GET /v1/event-types lists them)",
                          field="type")
    known_streams = {t.stream_type for t in registry}
    for name in stream_types:
        if name not in known_streams:
            raise Problem(422, "unknown_stream_type",
                          f"no stream type {name!r}; known: {', '.join(sorted(known_streams))}", field="stream_type")
    return FeedFilter(*(tuple(dict.fromkeys(v)) for v in (types, stream_types, stream_ids)))


def _frames(page: FeedPage, fmt: str) -> str:
    """A page's events as SSE frames (id = position, event = type) or NDJSON lines."""
    if fmt == "sse":
        return "".join(f"id: {e.position}\nevent: {e.type}\ndata: {e.json}\n\n" for e in page.events)
    return "".join(f"{e.json}\n" for e in page.events)


def _heartbeat(fmt: str, position: int) -> str:
    if fmt == "sse":
        return ": heartbeat\n\n"
    return json.dumps({"heartbeat": True, "position": position}) + "\n"


def _read(state: ChronicleState, after: int, feed: FeedFilter) -> FeedPage:
    with state.pool.connection() as conn:
        return read_page(conn, after, PAGE_EVENTS, feed)


async def follow(state: ChronicleState, subscription_id: str, after: int, feed: FeedFilter,
                 fmt: str) -> AsyncIterator[str]:
    """The feed's body: pages of the log from `after`, then live pages as commits are announced.

    Each page is sent before the next is read, and a send waits while the client's connection is
    full, so memory stays one page per feed whatever the client's speed.
    """
    listener = listener_of(state)
    heartbeat = state.settings.chronicle_subscribe_heartbeat_seconds
    position, sent, last_write = after, 0, time.monotonic()
    last_touch = last_write
    try:
        while True:
            seen = listener.generation
            page = await anyio.to_thread.run_sync(_read, state, position, feed)
            position = page.upto
            if page.events:
                sent += len(page.events)
                yield _frames(page, fmt)
                last_write = time.monotonic()
            now = time.monotonic()
            if now - last_touch >= heartbeat:
                await anyio.to_thread.run_sync(touch_subscription, state.pool, subscription_id, position, sent)
                last_touch = now
            if page.events and len(page.events) == PAGE_EVENTS or position < page.safe:
                continue  # more history to read
            quiet = heartbeat - (now - last_write)
            if quiet <= 0 or not await listener.wait(seen, quiet):
                if time.monotonic() - last_write >= heartbeat:
                    yield _heartbeat(fmt, position)
                    last_write = time.monotonic()
    finally:
        with anyio.CancelScope(shield=True):
            try:
                await anyio.to_thread.run_sync(close_subscription, state.pool, subscription_id)
            except Exception:  # noqa: BLE001 - the row goes stale and is forgotten later
                logger.warning("could not close subscription %s", subscription_id, exc_info=True)


@router.get("/subscribe", summary="Follow the log: history, then live events (SSE or NDJSON)",
            response_class=StreamingResponse,
            responses={200: STREAM_DOC, 406: {"description": "Not Acceptable: `not_acceptable`"},
                       410: {"description": "an archived range of the log lies after the start: `log_archived`"}})
async def subscribe(
    request: Request,
    state: ChronicleState = Depends(chronicle),
    _: Any = Subscriber,
    after: int = Query(0, ge=0, le=MAX_POSITION, description="start after this position (0: the beginning)"),
    type: list[Name] = Query([], max_length=50, description="event type, repeatable (any of them)"),
    stream_type: list[Name] = Query([], max_length=50, description="stream type, repeatable (any of them)"),
    stream_id: list[Annotated[str, StringConstraints(pattern=_ID)]] = Query(
        [], max_length=50, description="stream id, repeatable (any of them)"),
    last_event_id: str | None = Header(None, alias="Last-Event-ID", max_length=30,
                                       description="resume after this position (overrides ?after=)"),
    accept: str | None = Header(None, max_length=500),
) -> StreamingResponse:
    """Every event matching the filters after `after` (or Last-Event-ID), in position order, each
    once, then each new one as it commits.

    `Accept: text/event-stream` (default): SSE frames with `id:` the position and `event:` the type;
    `: heartbeat` comments after CHRONICLE_SUBSCRIBE_HEARTBEAT_SECONDS without an event.
    `Accept: application/x-ndjson`: one event per line, heartbeats `{"heartbeat": true, "position": N}`
    (resume after N: nothing up to it is left to send). Events are the items of GET /v1/events.
    """
    fmt = feed_format(accept)
    start = start_position(after, last_event_id)
    await anyio.to_thread.run_sync(check_feed_start, state.pool, start)  # 410 before an archived range
    feed = feed_filter(type, stream_type, stream_id)
    principal = request.state.principal
    subscription_id = await anyio.to_thread.run_sync(open_subscription, state.pool, principal.key_id, fmt, feed,
                                                     start)
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no", "X-Chronicle-Subscription": subscription_id}
    return StreamingResponse(follow(state, subscription_id, start, feed, fmt),
                             media_type=SSE if fmt == "sse" else NDJSON, headers=headers)


@router.get("/subscriptions", summary="The open feeds")
def subscriptions(state: ChronicleState = Depends(chronicle), _: Any = Operator) -> SubscriptionList:
    """Every open GET /v1/subscribe response of every API process: its key, filters, position, lag
    behind the safe position, and `stale` when its process has not written for three heartbeats."""
    return {"subscriptions": list_subscriptions(state.pool, state.settings.chronicle_subscribe_heartbeat_seconds)}
