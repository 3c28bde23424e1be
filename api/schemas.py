"""The response bodies the API publishes: one pydantic model per shape, for /openapi.json.

Two versions are named apart everywhere: `stream_version` is the stream's (what ETag and
If-Match carry), `document_version` a document's own content numbering. Models allow extra
keys so a field added below never breaks a response; clients see the declared ones typed.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field

from api.route_threads import run_blocking

JSON = Any  # a JSON value as stored (object, list, text, number)


class ExactRoute(APIRoute):
    """A route whose response has exactly the keys the handler gave: a model's optional field
    the handler left out stays out (no added nulls), so typing a body never changes its shape.

    A plain (blocking) handler runs in a worker thread (api.route_threads), through an async wrapper,
    so FastAPI validates and serialises its answer in the event loop: one thread hop, not two.
    """

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        kwargs["response_model_exclude_unset"] = True
        if not inspect.iscoroutinefunction(endpoint):
            endpoint = _in_thread(endpoint)
        super().__init__(path, endpoint, **kwargs)


def _in_thread(endpoint: Callable[..., Any]) -> Callable[..., Any]:
    """An async endpoint that runs blocking `endpoint` in a worker thread.

    FastAPI reads the parameters and the response model from its resolved signature."""

    @functools.wraps(endpoint)
    async def run(**values: Any) -> Any:
        return await run_blocking(endpoint, **values)

    run.__signature__ = inspect.signature(endpoint, eval_str=True)  # type: ignore[attr-defined]
    return run


class Out(BaseModel):
    """A response body: the declared fields, and any others the route adds."""

    model_config = ConfigDict(extra="allow")


class ProblemOut(Out):
    """RFC 9457 problem details (application/problem+json): switch on `code`; `field` names the input."""

    model_config = ConfigDict(extra="allow", title="Problem", json_schema_extra={"example": {
        "type": "https://chronicle.dev/problems/document_not_found", "title": "Not Found", "status": 404,
        "code": "document_not_found", "detail": "no document '0c1e…'", "field": "document_id",
        "instance": "/v1/documents/0c1e…"}})

    type: str
    title: str
    status: int
    code: str = Field(description="stable, machine-readable error code")
    detail: str
    field: str | None = Field(None, description="the request input at fault: a body field, parameter or header")
    instance: str | None = None
    current_stream_version: int | None = Field(None, description="on 409/412 conflicts: the stream's version now")
    errors: list[dict[str, JSON]] | None = Field(None, description="on validation errors: every field at fault")


# -- commands ----------------------------------------------------------------------------------

class CommandOut(Out):
    """What a command did: the stream's new version (its ETag) and the log position it reached."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"example": {
        "stream_id": "0c1e5c7a-2f0e-4c47-9a51-1a8b8f8a0d11", "stream_version": 3, "position": 42,
        "appended": 1, "duplicate": False, "correlation_id": "req-7"}})

    stream_id: str
    stream_version: int = Field(description="the stream's version after the command; the ETag")
    position: int | None = Field(None, description="the log position reached; send as ?min_position= to read it")
    appended: int = Field(description="events appended (0: nothing changed)")
    duplicate: bool = Field(description="true when this command id had already run")
    correlation_id: str


class EdgeCommandOut(CommandOut):
    """A created edge: the command's outcome and the edge's id."""

    edge_id: str


class ExecutionCommandOut(CommandOut):
    """A recorded execution: the command's outcome and the execution's id."""

    execution_id: str


class HistoryEntry(Out):
    """One event of a stream's history."""

    stream_version: int
    type: str
    timestamp: str
    payload: JSON


class HistoryOut(Out):
    """A stream's versions (without ?version= or ?as_of=) or its state then (with one): one of the two."""

    stream_id: str
    current_stream_version: int = Field(description="the stream's version now; the ETag")
    versions: list[HistoryEntry] | None = None
    stream_type: str | None = None
    stream_version: int | None = Field(None, description="the version the state is at (time travel)")
    modified_at: str | None = None
    state: dict[str, JSON] | None = None


class DiffOut(Out):
    """What changed between two stream versions, field by field."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    stream_id: str
    from_: int = Field(alias="from")
    to: int
    changes: list[dict[str, JSON]]


# -- reads -------------------------------------------------------------------------------------

class Snapshot(Out):
    """What every read model row carries: the stream version and log position that shaped it."""

    stream_version: int = Field(description="the stream's version (the ETag)")
    last_position: int | None = None
    last_event_id: str | None = None
    created_at: str | None = None
    updated_at: str | None = None


class DocumentOut(Snapshot):
    """A document now (or, with ?tag=, at its tagged version)."""

    document_id: str
    namespace: str
    type: str
    title: str
    content: str | None = None
    body: JSON = None
    metadata: dict[str, JSON] | None = None
    document_version: int = Field(description="the document's content version (tags point at these)")
    session_id: str | None = None
    created_by: str | None = None
    created_by_type: str | None = None
    created_position: int | None = None
    tags: dict[str, int] | None = Field(None, description="live tag -> document_version")
    tag: str | None = None


class DocumentPage(Out):
    documents: list[DocumentOut]
    next_cursor: str | None = None


class SessionDocumentOut(DocumentOut):
    """A document a session touched: the document now (no content or body with include_body=false),
    and the session's last touch of it."""

    touch: str = Field(description="the event type of the session's last touch, e.g. document.updated")
    touched_at: str | None = None
    touched_by: str | None = None
    touched_by_type: str | None = None
    touched_position: int = Field(description="the log position of the session's last touch (the sort key)")


class SessionDocumentPage(Out):
    session_id: str
    documents: list[SessionDocumentOut]
    next_cursor: str | None = None


class VersionOut(Out):
    """One content version of a document (headers; with its body when read alone)."""

    document_id: str
    document_version: int
    namespace: str | None = None
    type: str | None = None
    title: str | None = None
    content: str | None = None
    body: JSON = None
    metadata: dict[str, JSON] | None = None
    change_description: str | None = None
    session_id: str | None = None
    created_by: str | None = None
    created_by_type: str | None = None
    created_at: str | None = None
    stream_version: int
    last_position: int | None = None


class VersionPage(Out):
    document_id: str
    versions: list[VersionOut]
    next_cursor: str | None = None


class TagsOut(Out):
    """Where each tag points now, and every move of the document's tags."""

    document_id: str
    tags: list[dict[str, JSON]]
    history: list[dict[str, JSON]]


class AgentOut(Snapshot):
    agent_id: str
    name: str
    prompt: str | None = None
    model: str | None = None
    tools: list[JSON] | None = None
    metadata: dict[str, JSON] | None = None


class AgentPage(Out):
    agents: list[AgentOut]
    next_cursor: str | None = None


class ExecutionOut(Out):
    agent_id: str
    execution_id: str
    input: JSON = None
    output: JSON = None
    duration_ms: int | None = None
    tokens: int | None = None
    metadata: dict[str, JSON] | None = None
    session_id: str | None = None
    created_at: str | None = None
    stream_version: int
    last_position: int | None = None


class ExecutionPage(Out):
    agent_id: str
    executions: list[ExecutionOut]
    next_cursor: str | None = None


class EdgeOut(Out):
    edge_id: str
    source_id: str
    target_id: str
    type: str
    metadata: dict[str, JSON] | None = None
    stream_version: int
    last_position: int | None = None


class ChainOut(Snapshot):
    chain_id: str
    name: str
    description: str | None = None
    metadata: dict[str, JSON] | None = None
    canvas_state: JSON = None
    viewport: JSON = None
    nodes: JSON = None
    edges: list[EdgeOut] | None = Field(None, description="live edges (one chain only)")


class ChainPage(Out):
    chains: list[ChainOut]
    next_cursor: str | None = None


class CanvasOut(Out):
    chain_id: str
    canvas_state: JSON = None
    viewport: JSON = None
    nodes: JSON = None
    stream_version: int


class EdgesOut(Out):
    chain_id: str
    edges: list[EdgeOut]


# -- audit -------------------------------------------------------------------------------------

class EventOut(Out):
    """One stored event, its payload upcast to the current schema version."""

    position: int
    event_id: str
    stream_id: str
    stream_type: str
    stream_version: int = Field(description="the event's version within its stream")
    type: str
    schema_version: int
    payload: JSON
    metadata: dict[str, JSON] | None = None
    recorded_at: str
    depth: int | None = Field(None, description="generations from the event asked about (causation)")


class EventPage(Out):
    events: list[EventOut]
    next_cursor: str | None = None


class StreamEventsOut(Out):
    stream_id: str
    stream_type: str
    stream_version: int = Field(description="the stream's version now; the ETag")
    events: list[EventOut]
    next_cursor: str | None = None


class CausationOut(Out):
    event: EventOut
    caused_by: list[EventOut]
    caused: list[EventOut]


# -- system and operations ---------------------------------------------------------------------

class HealthOut(Out):
    status: str


class ReadyOut(Out):
    status: str
    checks: dict[str, dict[str, JSON]]


class KeyOut(Out):
    key_id: str
    name: str
    role: str
    actor_id: str
    actor_type: str
    created_by: str | None = None


class NewKeyOut(KeyOut):
    token: str = Field(description="the secret, shown this once: Authorization: Bearer <token>")


class KeyList(Out):
    keys: list[KeyOut]


class LogOut(Out):
    """The log's head, safe position, and the open transactions holding readers back."""

    blockers: list[dict[str, JSON]]


class ProjectionsOut(Out):
    projections: list[dict[str, JSON]]
    log: dict[str, JSON]


class JobRequestedOut(Out):
    projection: str
    job_id: int
    state: str
    position: int
    progress: str


class JobOut(Out):
    """A rebuild or replay job and its progress."""

    state: str | None = None


class DeadLetterList(Out):
    dead_letters: list[dict[str, JSON]]


class DeadLetterOutcome(Out):
    resumed: JSON = None
    still_parked: JSON = None
    position: int


class VerifyOut(Out):
    """A projection compared with a rebuild from the log: the differing rows."""
