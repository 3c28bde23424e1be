"""The documents read model: current documents, versions with bodies stored once, and tags.

`document` and `active_tag` hold live documents only; a deleted document's state waits
in `document_tombstone` for `document.restored`. Versions and tag moves stay as history.
`session_touch` says which documents each session touched, and when last: every event of a
document's stream whose metadata names a session moves that (session, document) row.
"""

from __future__ import annotations

from typing import Any

from projections.model import (
    Event, Handler, LogTable, Output, Projector, Row, StateTable, StreamRows, actor, content_hash, pick,
)

DOCUMENT = StateTable("document", "document_id")
TAG = StateTable("active_tag", "document_id", key="tag")
TOMBSTONE = StateTable("document_tombstone", "document_id")
BODY = LogTable("document_body", ("body_hash",), overwrite=False)
VERSION = LogTable("document_version", ("document_id", "version"))
TAG_EVENT = LogTable("tag_event", ("event_id", "tag"))
# One row per (session, document), overwritten by each later touch: a batch keeps the last of
# its events per key, and the batches come in log order.
SESSION_TOUCH = LogTable("session_touch", ("session_id", "document_id"))

projector = Projector(
    "documents", ("document",), (DOCUMENT, TAG, TOMBSTONE), (BODY, VERSION, TAG_EVENT, SESSION_TOUCH)
)


def _body(row: Row, out: Output) -> None:
    """Point the row at its content-addressed body, storing the body once."""
    row["body_hash"] = content_hash(row.get("content"), row.get("body"))
    out.add(BODY, {"body_hash": row["body_hash"], "content": row.get("content"), "body": row.get("body")})


def _version(s: StreamRows, e: Event, row: Row, out: Output, change: str | None) -> None:
    actor_id, actor_type, session_id = actor(e)
    out.add(VERSION, {
        "document_id": s.stream_id, "version": row["version"], "namespace": row["namespace"],
        "document_type": row["document_type"], "title": row["title"], "metadata": row["metadata"],
        "body_hash": row["body_hash"], "change_description": change, "session_id": session_id,
        "created_by": actor_id, "created_by_type": actor_type, "created_at": e.recorded_at, **e.shape(),
    })


def _tag_event(s: StreamRows, e: Event, out: Output, tag: str, version: Any, previous: Any, op: str) -> None:
    actor_id, actor_type, session_id = actor(e)
    out.add(TAG_EVENT, {
        "event_id": e.event_id, "tag": tag, "document_id": s.stream_id, "document_version": version,
        "previous_version": previous, "operation": op, "created_at": e.recorded_at,
        "created_by": actor_id, "created_by_type": actor_type, "session_id": session_id,
        "last_version": e.version, "last_position": e.position,
    })


def _tag_row(s: StreamRows, e: Event, tag: str, version: int, created_position: int | None) -> Row:
    """A live tag; it carries its document's created_position, the order of lists by tag."""
    actor_id, actor_type, session_id = actor(e)
    return {
        "tag": tag, "document_id": s.stream_id, "document_version": version, "updated_at": e.recorded_at,
        "updated_by": actor_id, "updated_by_type": actor_type, "session_id": session_id,
        "created_position": created_position, **e.shape(),
    }



def _bury(s: StreamRows, e: Event, row: Row, tags: dict[str, Row]) -> None:
    """Move a live document's rows into its tombstone, its tags in tag order.

    A dict of tags is in the order they were set when a run kept them, in the table's heap order
    when it loaded them: sorted, the tombstone is the same either way (and in a rebuild).
    """
    s.set_one(TOMBSTONE.name, {
        "document_id": s.stream_id, "state": {"document": row, "tags": [tags[t] for t in sorted(tags)]},
        **e.shape(),
    })
    s.set_one(DOCUMENT.name, None)
    tags.clear()


@projector.on("document.created")
def created(s: StreamRows, e: Event, out: Output) -> None:
    p = e.payload
    actor_id, actor_type, session_id = actor(e)
    row = {
        "document_id": s.stream_id, "namespace": p["namespace"], "document_type": p["document_type"],
        "title": p.get("title"), "content": p.get("content"), "body": p.get("body"),
        "metadata": p.get("metadata") or {}, "version": p.get("version", 1), "session_id": session_id,
        "created_by": actor_id, "created_by_type": actor_type, "created_at": e.recorded_at,
        "created_position": e.position, "updated_at": e.recorded_at, **e.shape(),
    }
    _body(row, out)
    s.set_one(DOCUMENT.name, row)
    _version(s, e, row, out, None)


@projector.on("document.updated")
def updated(s: StreamRows, e: Event, out: Output) -> None:
    row = s.touch(DOCUMENT.name, e)
    if row is None:
        return
    # A field the update left out is null in the payload, and keeps its value (as in the domain).
    given = {k: v for k, v in e.payload.items() if v is not None}
    pick(given, row, "title", "content", "body", "metadata")
    pick(e.payload, row, "version")
    if "content" in given or "body" in given or not row.get("body_hash"):
        _body(row, out)  # the same content keeps its hash, and its body is stored already
    _version(s, e, row, out, e.payload.get("change_description"))


@projector.on("document.deleted")
def deleted(s: StreamRows, e: Event, out: Output) -> None:
    row = s.one(DOCUMENT.name)
    if row is not None:
        _bury(s, e, row, s.many(TAG.name))


@projector.on("document.restored")
def restored(s: StreamRows, e: Event, out: Output) -> None:
    tomb = s.one(TOMBSTONE.name)
    if tomb is None or s.one(DOCUMENT.name) is not None:
        return
    state = tomb["state"]
    s.set_one(DOCUMENT.name, dict(state["document"], updated_at=e.recorded_at, **e.shape()))
    tags = s.many(TAG.name)
    tags.clear()
    position = state["document"].get("created_position")
    tags.update({t["tag"]: dict(t, created_position=position) for t in state["tags"]})
    s.set_one(TOMBSTONE.name, None)


@projector.on("document.tagged")
def tagged(s: StreamRows, e: Event, out: Output) -> None:
    p = e.payload
    row = s.touch(DOCUMENT.name, e)
    if row is None:
        return
    s.many(TAG.name)[p["tag"]] = _tag_row(s, e, p["tag"], p["version"], row["created_position"])
    previous = p.get("previous_version")
    _tag_event(s, e, out, p["tag"], p["version"], previous, "moved" if previous is not None else "tagged")


@projector.on("document.untagged")
def untagged(s: StreamRows, e: Event, out: Output) -> None:
    p = e.payload
    if s.touch(DOCUMENT.name, e) is None:
        return
    s.many(TAG.name).pop(p["tag"], None)
    _tag_event(s, e, out, p["tag"], None, p.get("previous_version"), "untagged")


@projector.on("document.undone", "document.redone")
def undone(s: StreamRows, e: Event, out: Output) -> None:
    """Replace the document's rows with the carried state; each tag it moves is a tag_event."""
    state = e.payload["state"]
    op = e.type.split(".", 1)[1]
    old = s.one(DOCUMENT.name)
    tomb = s.one(TOMBSTONE.name)
    origin = old or (tomb["state"]["document"] if tomb else None) or {}
    tags = s.many(TAG.name)
    prior = dict(tags) if old is not None or tomb is None else {r["tag"]: r for r in tomb["state"]["tags"]}
    before = {t: r["document_version"] for t, r in prior.items()}
    actor_id, actor_type, session_id = actor(e)
    row = {
        "document_id": s.stream_id, "namespace": state.get("namespace"),
        "document_type": state.get("document_type"), "title": state.get("title"),
        "content": state.get("content"), "body": state.get("body"), "metadata": state.get("metadata") or {},
        "version": state.get("version"), "session_id": origin.get("session_id", session_id),
        "created_by": origin.get("created_by", actor_id), "created_by_type": origin.get("created_by_type", actor_type),
        "created_at": origin.get("created_at", e.recorded_at),
        "created_position": origin.get("created_position", e.position),
        "updated_at": e.recorded_at, **e.shape(),
    }
    _body(row, out)
    wanted: dict[str, int] = dict(state.get("tags") or {})
    tags.clear()
    for tag, version in wanted.items():
        kept = prior.get(tag)
        tags[tag] = (dict(kept, created_position=row["created_position"])
                     if kept is not None and kept["document_version"] == version
                     else _tag_row(s, e, tag, version, row["created_position"]))
    for tag in sorted(set(before) | set(wanted)):
        if before.get(tag) != wanted.get(tag):
            _tag_event(s, e, out, tag, wanted.get(tag), before.get(tag), op)
    s.set_one(DOCUMENT.name, row)
    s.set_one(TOMBSTONE.name, None)
    if state.get("deleted"):
        _bury(s, e, row, tags)


def session_touch(s: StreamRows, e: Event, out: Output) -> None:
    """Record that the event's session (if it names one) touched this document at this event."""
    actor_id, actor_type, session_id = actor(e)
    if session_id is None:
        return
    out.add(SESSION_TOUCH, {
        "session_id": session_id, "document_id": s.stream_id, "touch": e.type, "touched_at": e.recorded_at,
        "touched_by": actor_id, "touched_by_type": actor_type, **e.shape(),
    })


def _touching(handler: Handler) -> Handler:
    """The handler, then the session touch every document event makes."""

    def handle(s: StreamRows, e: Event, out: Output) -> None:
        handler(s, e, out)
        session_touch(s, e, out)

    handle.__name__ = handler.__name__
    handle.__doc__ = handler.__doc__
    return handle


projector.handlers.update({name: _touching(fn) for name, fn in projector.handlers.items()})
