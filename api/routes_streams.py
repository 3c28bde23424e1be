"""Every stream's undo, redo, history (time travel) and diff: chains, documents, agents alike.

Versions here are stream versions (ETag, If-Match); `?version=` names one to travel to.
History and diff read the log itself, so `?min_position=` waits only for the log to get there.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Any
from uuid import UUID

from fastapi import APIRouter, Depends, Path, Query, Request, Response

from api.commanding import KINDS, CommandRequest, Ctx, State, execute
from api.deps import ChronicleState, Reader, etag, min_position_on_primary
from api.problems import Problem
from api.schemas import ExactRoute, CommandOut, DiffOut, HistoryOut
from domain import commands as c
from domain.errors import NotFoundError

router = APIRouter(prefix="/v1", tags=["streams"], route_class=ExactRoute)


def _stream_of_kind(state: ChronicleState, kind: str, stream_id: UUID) -> int:
    """The stream's current version; 404 unless it exists and is of this kind."""
    with state.pool.connection() as conn:
        row = conn.execute("SELECT stream_type, version FROM streams WHERE stream_id = %s", (str(stream_id),)).fetchone()
    if row is None or row["stream_type"] != KINDS[kind]:
        raise Problem(404, f"{KINDS[kind]}_not_found", f"no {KINDS[kind]} {stream_id}", field=f"{KINDS[kind]}_id")
    return row["version"]


def _add_stream_routes(kind: str) -> None:
    single = KINDS[kind]

    def undo(request: Request, response: Response, stream_id: UUID = Path(..., alias=f"{single}_id"),
             state: ChronicleState = State, ctx: CommandRequest = Ctx) -> CommandOut:
        _stream_of_kind(state, kind, stream_id)
        return execute(request, response, ctx, c.Undo, stream_id=stream_id)

    def redo(request: Request, response: Response, stream_id: UUID = Path(..., alias=f"{single}_id"),
             state: ChronicleState = State, ctx: CommandRequest = Ctx) -> CommandOut:
        _stream_of_kind(state, kind, stream_id)
        return execute(request, response, ctx, c.Redo, stream_id=stream_id)

    def history(
        response: Response,
        stream_id: UUID = Path(..., alias=f"{single}_id"),
        version: int | None = Query(None, ge=1, description="the state at this version"),
        as_of: datetime | None = Query(None, description="the state as of this time (ISO 8601 with zone)"),
        after_version: int = Query(0, ge=0),
        limit: int = Query(100, ge=1, le=1000),
        state: ChronicleState = State,
        _: Any = Reader,
        _wait: int | None = Depends(min_position_on_primary),
    ) -> HistoryOut:
        current = _stream_of_kind(state, kind, stream_id)
        response.headers["ETag"] = etag(current)
        if version is not None and as_of is not None:
            raise Problem(422, "invalid_query", "give version or as_of, not both", field="as_of")
        if version is not None or as_of is not None:
            if as_of is not None and as_of.tzinfo is None:
                raise Problem(422, "invalid_query", "as_of needs a time zone, e.g. 2025-01-01T00:00:00Z", field="as_of")
            try:
                at = state.service.state_at(stream_id, version=version, at=as_of)
            except NotFoundError as exc:  # the stream did not exist yet at that time
                raise Problem(404, "version_not_found", str(exc), field="as_of") from None
            return HistoryOut.model_validate({
                "stream_id": at.stream_id, "stream_type": at.stream_type, "stream_version": at.version,
                "current_stream_version": current, "modified_at": at.modified_at.isoformat(), "state": at.state})
        entries = state.service.history(stream_id, after_version=after_version, limit=limit)
        return HistoryOut.model_validate({"stream_id": str(stream_id), "current_stream_version": current, "versions": [
            {"stream_version": e.version, "type": e.type, "timestamp": e.timestamp.isoformat(), "payload": e.payload}
            for e in entries
        ]})

    def diff(
        stream_id: UUID = Path(..., alias=f"{single}_id"),
        from_version: int = Query(..., ge=1, alias="from"),
        to_version: int = Query(..., ge=1, alias="to"),
        state: ChronicleState = State,
        _: Any = Reader,
        _wait: int | None = Depends(min_position_on_primary),
    ) -> DiffOut:
        _stream_of_kind(state, kind, stream_id)
        result = state.service.diff(stream_id, from_version, to_version)
        return DiffOut.model_validate({"stream_id": result.stream_id, "from": result.from_version,
                                       "to": result.to_version, "changes": [asdict(c) for c in result.changes]})

    undo.__doc__ = f"Undo the latest change to a {single} not yet undone (a new event; history stays)."
    redo.__doc__ = f"Re-apply the latest undone change to a {single}."
    history.__doc__ = f"A {single}'s versions, or its state at ?version= or ?as_of= (time travel)."
    diff.__doc__ = f"What changed in a {single} between two versions, field by field."
    router.add_api_route(f"/{kind}/{{{single}_id}}/undo", undo, methods=["POST"], summary=f"Undo on a {single}",
                         name=f"undo_{single}")
    router.add_api_route(f"/{kind}/{{{single}_id}}/redo", redo, methods=["POST"], summary=f"Redo on a {single}",
                         name=f"redo_{single}")
    router.add_api_route(f"/{kind}/{{{single}_id}}/history", history, methods=["GET"],
                         summary=f"A {single}'s history and time travel", name=f"history_{single}")
    router.add_api_route(f"/{kind}/{{{single}_id}}/diff", diff, methods=["GET"],
                         summary=f"Diff two versions of a {single}", name=f"diff_{single}")


for _kind in KINDS:
    _add_stream_routes(_kind)

