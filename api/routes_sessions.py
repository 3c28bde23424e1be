"""The session read: every live document a session touched, most recently touched first, on the record.

Served from `session_touch` (the documents projector keeps it from each event's
metadata.session_id) joined to `document`: a range scan of one session's touches.
Each read appends one `document.accessed` event to the session's stream, unless
CHRONICLE_RECORD_ACCESS is off; a failure to record never fails the read (see the headers).
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Query, Response
from pydantic import StringConstraints

from api.deps import ChronicleState, MAX_POSITION, Reader, decode_cursor, min_position_for, page_of, page_size, read_state
from service_layer.keys import ApiKey
from api.read_support import _fetch_all, _json
from api.routes_reads import IDENT
from api.schemas import ExactRoute, SessionDocumentPage
from domain.session import MAX_ACCESSED_TYPES, DocumentAccessed, session_stream_id
from infrastructure.event_store import ANY, EventMetadata, NewEvent

logger = logging.getLogger("chronicle.api")
router = APIRouter(prefix="/v1", tags=["reads"], route_class=ExactRoute)
# A session id as the X-Session-Id header carries it (api/deps.py), slashes included.
SESSION_ID = r"^[A-Za-z0-9][A-Za-z0-9._:@/+=-]{0,199}$"
TypeName = Annotated[str, StringConstraints(pattern=IDENT)]
RECORDED = "X-Chronicle-Access-Recorded"
NOT_RECORDED_REASON = "X-Chronicle-Access-Not-Recorded-Reason"
ACCESS_POSITION = "X-Chronicle-Access-Position"

HEADER_COLUMNS = (
    "d.document_id, d.namespace, d.document_type AS type, d.title, d.metadata, d.version AS document_version,"
    " d.session_id, d.created_by, d.created_by_type, d.created_at, d.updated_at, d.created_position,"
    " d.last_event_id, d.last_version AS stream_version, d.last_position,"
    " t.touch, t.touched_at, t.touched_by, t.touched_by_type, t.last_position AS touched_position"
)
# One session's touches from the cursor down, each joined to its live document (a deleted one
# has no snapshot row, so it drops out; a restored one is back). Both ends of the range are
# bound, so even a generic plan scans session_touch_session_idx in order.
SESSION_DOCUMENTS = (
    "SELECT {columns} FROM session_touch t JOIN document d ON d.document_id = t.document_id"
    " WHERE t.session_id = %s AND t.last_position < %s{types} ORDER BY t.last_position DESC LIMIT %s"
)


ACCESS_HEADERS = {
    RECORDED: {"description": "whether this read's document.accessed event was appended (true | false)",
               "schema": {"type": "string", "enum": ["true", "false"]}},
    NOT_RECORDED_REASON: {"description": "with false: why (disabled, or the error that kept it off the record)",
                          "schema": {"type": "string"}},
    ACCESS_POSITION: {"description": "with true: the log position of the document.accessed event",
                      "schema": {"type": "integer"}},
}


@router.get("/sessions/{session_id:path}/documents",
            summary="Every live document a session created, updated or tagged, most recently touched first",
            responses={200: {"headers": ACCESS_HEADERS}})
def session_documents(
    response: Response,
    session_id: str = Path(..., pattern=SESSION_ID, max_length=200),
    state: ChronicleState = Depends(read_state),
    principal: ApiKey = Reader,
    type: list[TypeName] | None = Query(None, max_length=MAX_ACCESSED_TYPES,
                                         description="document type, repeatable (any of them)"),
    include_body: bool = Query(True, description="false: headers only (no content or body)"),
    cursor: str | None = Query(None, max_length=200),
    limit: int = Depends(page_size),
    correlation_id: str | None = Header(None, alias="X-Correlation-Id"),
    _wait: int | None = Depends(min_position_for("documents")),
) -> SessionDocumentPage:
    """A page of the documents the session touched (any event of theirs recorded in it), live
    ones only, most recently touched first; `?type=` any of several types.

    Appends one `document.accessed` event to stream `session:<id>` naming the documents read;
    `X-Chronicle-Access-Recorded` says whether it was (false: with a reason; the read stands).
    """
    types = list(dict.fromkeys(type or ()))
    after = decode_cursor(cursor, (int,))
    columns = HEADER_COLUMNS + (", d.content, d.body" if include_body else "")
    params: list[Any] = [session_id, after[0] if after else MAX_POSITION]
    if types:
        params.append(types)
    params.append(limit + 1)
    sql = SESSION_DOCUMENTS.format(columns=columns, types=" AND d.document_type = ANY(%s)" if types else "")
    rows, next_cursor = page_of(_fetch_all(state, sql, params), limit, "touched_position")
    documents = [_json(r) for r in rows]
    record_access(state, response, principal, session_id, correlation_id, types, documents, include_body)
    return {"session_id": session_id, "documents": documents, "next_cursor": next_cursor}


def record_access(
    state: ChronicleState, response: Response, principal: ApiKey, session_id: str, trace_id: str | None,
    types: list[str], documents: list[dict[str, Any]], include_body: bool,
) -> None:
    """Append the read's `document.accessed` event and say in the headers whether it is on the record.

    Never raises: a read that was answered stays answered when the record cannot be written.
    """
    if not state.settings.chronicle_record_access:
        response.headers[RECORDED] = "false"
        response.headers[NOT_RECORDED_REASON] = "disabled (CHRONICLE_RECORD_ACCESS is off)"
        return
    payload = DocumentAccessed(
        session_id=session_id, actor_id=principal.actor_id, actor_type=principal.actor_type, trace_id=trace_id,
        document_count=len(documents), types=types, document_ids=[d["document_id"] for d in documents],
        include_body=include_body,
    )
    metadata = EventMetadata(actor_id=principal.actor_id, actor_type=principal.actor_type, session_id=session_id,
                             correlation_id=trace_id, api_key_id=principal.key_id)
    try:
        result = state.store.append(session_stream_id(session_id), ANY, [NewEvent("document.accessed", payload)],
                                    metadata, stream_type="session")
    except Exception as exc:  # noqa: BLE001 - the read is answered whatever the record's fate
        logger.warning("could not record a session read of %s: %s", session_id, exc)
        response.headers[RECORDED] = "false"
        response.headers[NOT_RECORDED_REASON] = _reason(exc)
        return
    response.headers[RECORDED] = "true"
    response.headers[ACCESS_POSITION] = str(result.positions[-1])


def _reason(exc: BaseException) -> str:
    """Why a record failed, as a header value: the error's class and first line, printable ASCII."""
    first = (str(exc).splitlines() or [""])[0][:200]
    text = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    return "".join(ch if " " <= ch <= "~" else "?" for ch in text)
