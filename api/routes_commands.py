"""Commands over HTTP, and each stream's undo, redo, history (time travel) and diff.

A command route builds a domain command and hands it to the application service. Its
response carries the stream's new version (ETag) and the log position it reached
(X-Chronicle-Position); If-Match sets the expected version (412 when it has moved).
"""

from __future__ import annotations

import uuid
from dataclasses import asdict
from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from api.deps import ChronicleState, CommandContext, Reader, chronicle, command_context, etag
from api.problems import Problem
from domain import commands as c
from domain.bounds import (
    Body, CanvasState, ChangeDescription, Content, Count, Description, DocumentVersion, EdgeMetadata, ExecutionData,
    Identifier, Metadata, ModelName, Name, NodePosition, Prompt, Reason, Title, Tools, Viewport,
)
from domain.errors import ConflictError, DomainError

router = APIRouter(prefix="/v1", tags=["commands"])
IDEMPOTENCY_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://chronicle/api/idempotency")
KINDS = {"chains": "chain", "documents": "document", "agents": "agent"}


class Strict(BaseModel):
    """A request body: unknown fields refused; each field's bounds are the domain's (domain.bounds)."""

    model_config = ConfigDict(extra="forbid")


def _command_id(request: Request, ctx: CommandContext) -> UUID | None:
    """With an Idempotency-Key, the command id derived from it: the domain dedups retries too."""
    key = request.headers.get("idempotency-key")
    return uuid.uuid5(IDEMPOTENCY_NAMESPACE, f"{ctx.principal.key_id}:{key}") if key else None


def execute(
    state: ChronicleState, request: Request, response: Response, ctx: CommandContext, command_class: type[c.Command],
    **fields: Any,
) -> dict[str, Any]:
    """Build the command, run it through the application service, answer with version and position.

    A version conflict is 412 when the caller sent If-Match, else 409; both carry the current version.
    """
    if state.service is None:
        raise Problem(503, "service_unavailable", "the workspace service is not available")
    if issubclass(command_class, c.StreamCommand):
        fields["expected_version"] = ctx.expected_version
    fields["command_id"] = _command_id(request, ctx)
    try:
        command = command_class.model_validate(fields)
    except DomainError as exc:  # a field out of shape or out of domain.bounds: named
        raise Problem(422, "validation_error", str(exc), field=exc.field) from None
    context = c.CommandContext(
        actor_id=ctx.actor_id, actor_type=ctx.actor_type, session_id=ctx.session_id,
        correlation_id=ctx.correlation_id, causation_id=ctx.causation_id,
    )
    try:
        result = state.service.handle(command, context)
    except ConflictError as exc:
        if ctx.expected_version is not None:
            raise Problem(412, "precondition_failed",
                          f"If-Match names version {ctx.expected_version}; the stream is at {exc.current_version}",
                          field="If-Match", current_version=exc.current_version,
                          headers={"ETag": etag(exc.current_version)}) from None
        raise Problem(409, "version_conflict", str(exc), field=exc.field,
                      current_version=exc.current_version) from None
    response.headers["ETag"] = etag(result.version)
    if result.position is not None:
        response.headers["X-Chronicle-Position"] = str(result.position)
    return {
        "stream_id": result.stream_id,
        "version": result.version,
        "position": result.position,
        "appended": result.appended,
        "duplicate": result.duplicate,
        "correlation_id": ctx.correlation_id,
    }


def created(response: Response, kind: str, body: dict[str, Any]) -> dict[str, Any]:
    response.status_code = 201
    response.headers["Location"] = f"/v1/{kind}/{body['stream_id']}"
    return body


# -- chains ----------------------------------------------------------------------------------

class ChainIn(Strict):
    chain_id: UUID | None = None
    name: Name
    description: Description = ""
    metadata: Metadata = Field(default_factory=dict)


class ChainPatch(Strict):
    name: Name | None = None
    description: Description | None = None
    metadata: Metadata | None = None


class CanvasIn(Strict):
    canvas_state: CanvasState
    viewport: Viewport = Field(default_factory=dict)


class NodeIn(Strict):
    node_id: Identifier
    kind: Identifier
    ref_id: Identifier
    position: NodePosition = Field(default_factory=dict)


class EdgeIn(Strict):
    edge_id: Identifier | None = None
    source_id: Identifier
    target_id: Identifier
    type: Identifier
    metadata: EdgeMetadata = Field(default_factory=dict)


class EdgePatch(Strict):
    type: Identifier | None = None
    metadata: EdgeMetadata | None = None


class ReasonIn(Strict):
    reason: Reason | None = None


Ctx = Depends(command_context)
State = Depends(chronicle)


@router.post("/chains", status_code=201, summary="Create a chain")
def create_chain(body: ChainIn, request: Request, response: Response, state: ChronicleState = State,
                 ctx: CommandContext = Ctx) -> dict[str, Any]:
    """Create a chain; its id is given or made. 201 with Location, ETag and log position."""
    return created(response, "chains", execute(state, request, response, ctx, c.CreateChain, **body.model_dump()))


@router.patch("/chains/{chain_id}", summary="Update a chain's name, description or metadata")
def update_chain(chain_id: UUID, body: ChainPatch, request: Request, response: Response,
                 state: ChronicleState = State, ctx: CommandContext = Ctx) -> dict[str, Any]:
    """Change the fields given; fields left out stay as they are."""
    return execute(state, request, response, ctx, c.UpdateChain, chain_id=chain_id, **body.model_dump())


@router.delete("/chains/{chain_id}", summary="Delete a chain")
def delete_chain(chain_id: UUID, request: Request, response: Response, reason: Annotated[Reason | None, Query()] = None,
                 state: ChronicleState = State, ctx: CommandContext = Ctx) -> dict[str, Any]:
    """Delete a chain; its history stays."""
    return execute(state, request, response, ctx, c.DeleteChain, chain_id=chain_id, reason=reason)


@router.put("/chains/{chain_id}/canvas", summary="Replace a chain's canvas state and viewport")
def put_canvas(chain_id: UUID, body: CanvasIn, request: Request, response: Response,
               state: ChronicleState = State, ctx: CommandContext = Ctx) -> dict[str, Any]:
    """Replace the canvas; an identical canvas appends nothing."""
    return execute(state, request, response, ctx, c.UpdateCanvas, chain_id=chain_id, **body.model_dump())


@router.post("/chains/{chain_id}/nodes", summary="Put a document or agent on the canvas")
def add_node(chain_id: UUID, body: NodeIn, request: Request, response: Response,
             state: ChronicleState = State, ctx: CommandContext = Ctx) -> dict[str, Any]:
    """Add a node that refers to an existing document or agent."""
    return execute(state, request, response, ctx, c.AddNode, chain_id=chain_id, **body.model_dump())


@router.delete("/chains/{chain_id}/nodes/{node_id}", summary="Take a node off the canvas")
def remove_node(chain_id: UUID, request: Request, response: Response, node_id: Annotated[Identifier, Path()],
                state: ChronicleState = State, ctx: CommandContext = Ctx) -> dict[str, Any]:
    """Remove a node (the domain refuses to leave its edges dangling)."""
    return execute(state, request, response, ctx, c.RemoveNode, chain_id=chain_id, node_id=node_id)


@router.post("/chains/{chain_id}/edges", summary="Join two nodes of a chain")
def create_edge(chain_id: UUID, body: EdgeIn, request: Request, response: Response,
                state: ChronicleState = State, ctx: CommandContext = Ctx) -> dict[str, Any]:
    """Create an edge between two different nodes of this chain; its id is given or made."""
    fields = body.model_dump()
    fields["edge_id"] = fields["edge_id"] or f"e-{uuid.uuid4().hex[:12]}"
    out = execute(state, request, response, ctx, c.CreateEdge, chain_id=chain_id, **fields)
    response.status_code = 201
    return {**out, "edge_id": fields["edge_id"]}


@router.patch("/chains/{chain_id}/edges/{edge_id}", summary="Update an edge")
def update_edge(chain_id: UUID, body: EdgePatch, request: Request, response: Response,
                edge_id: Annotated[Identifier, Path()], state: ChronicleState = State,
                ctx: CommandContext = Ctx) -> dict[str, Any]:
    """Change an edge's type or metadata."""
    return execute(state, request, response, ctx, c.UpdateEdge, chain_id=chain_id, edge_id=edge_id,
                   **body.model_dump())


@router.delete("/chains/{chain_id}/edges/{edge_id}", summary="Delete an edge")
def delete_edge(chain_id: UUID, request: Request, response: Response, edge_id: Annotated[Identifier, Path()],
                state: ChronicleState = State, ctx: CommandContext = Ctx) -> dict[str, Any]:
    """Delete an edge of this chain."""
    return execute(state, request, response, ctx, c.DeleteEdge, chain_id=chain_id, edge_id=edge_id)


# -- documents -------------------------------------------------------------------------------

class DocumentIn(Strict):
    document_id: UUID | None = None
    namespace: Identifier
    type: Identifier = Field(description="document type, e.g. session_context")
    title: Title
    content: Content | None = None
    body: Body | None = None
    metadata: Metadata = Field(default_factory=dict)


class DocumentPatch(Strict):
    title: Title | None = None
    content: Content | None = None
    body: Body | None = None
    metadata: Metadata | None = None
    change_description: ChangeDescription = ""


class TagIn(Strict):
    version: DocumentVersion


@router.post("/documents", status_code=201, summary="Create a document")
def create_document(body: DocumentIn, request: Request, response: Response, state: ChronicleState = State,
                    ctx: CommandContext = Ctx) -> dict[str, Any]:
    """Create a document (text content or a JSON body); its id is given or made."""
    fields = body.model_dump()
    fields["document_type"] = fields.pop("type")
    return created(response, "documents", execute(state, request, response, ctx, c.CreateDocument, **fields))


@router.patch("/documents/{document_id}", summary="Update a document (a new version)")
def update_document(document_id: UUID, body: DocumentPatch, request: Request, response: Response,
                    state: ChronicleState = State, ctx: CommandContext = Ctx) -> dict[str, Any]:
    """Change title, content, body or metadata, with a change description."""
    return execute(state, request, response, ctx, c.UpdateDocument, document_id=document_id, **body.model_dump())


@router.delete("/documents/{document_id}", summary="Delete a document")
def delete_document(document_id: UUID, request: Request, response: Response,
                    reason: Annotated[Reason | None, Query()] = None,
                    state: ChronicleState = State, ctx: CommandContext = Ctx) -> dict[str, Any]:
    """Delete a document; its versions stay readable and it can be restored."""
    return execute(state, request, response, ctx, c.DeleteDocument, document_id=document_id, reason=reason)


@router.post("/documents/{document_id}/restore", summary="Restore a deleted document")
def restore_document(document_id: UUID, request: Request, response: Response, body: ReasonIn | None = None,
                     state: ChronicleState = State, ctx: CommandContext = Ctx) -> dict[str, Any]:
    """Bring a deleted document back as it was."""
    return execute(state, request, response, ctx, c.RestoreDocument, document_id=document_id,
                   reason=body.reason if body else None)


@router.put("/documents/{document_id}/tags/{tag}", summary="Point a tag at a version")
def put_tag(document_id: UUID, body: TagIn, request: Request, response: Response,
            tag: Annotated[Identifier, Path()], state: ChronicleState = State,
            ctx: CommandContext = Ctx) -> dict[str, Any]:
    """Tag a version that exists (moving the tag if it pointed elsewhere)."""
    return execute(state, request, response, ctx, c.TagDocument, document_id=document_id, tag=tag,
                   version=body.version)


@router.delete("/documents/{document_id}/tags/{tag}", summary="Remove a tag")
def delete_tag(document_id: UUID, request: Request, response: Response, tag: Annotated[Identifier, Path()],
               state: ChronicleState = State, ctx: CommandContext = Ctx) -> dict[str, Any]:
    """Remove a tag from the document."""
    return execute(state, request, response, ctx, c.UntagDocument, document_id=document_id, tag=tag)


# -- agents ----------------------------------------------------------------------------------

class AgentIn(Strict):
    agent_id: UUID | None = None
    name: Name
    prompt: Prompt
    model: ModelName
    tools: Tools = Field(default_factory=list)
    metadata: Metadata = Field(default_factory=dict)


class AgentPatch(Strict):
    name: Name | None = None
    prompt: Prompt | None = None
    model: ModelName | None = None
    tools: Tools | None = None
    metadata: Metadata | None = None


class ExecutionIn(Strict):
    execution_id: Identifier | None = None
    input: ExecutionData = None
    output: ExecutionData = None
    duration_ms: Count
    tokens: Count
    metadata: Metadata = Field(default_factory=dict)


@router.post("/agents", status_code=201, summary="Create an agent")
def create_agent(body: AgentIn, request: Request, response: Response, state: ChronicleState = State,
                 ctx: CommandContext = Ctx) -> dict[str, Any]:
    """Create an agent; its id is given or made."""
    return created(response, "agents", execute(state, request, response, ctx, c.CreateAgent, **body.model_dump()))


@router.patch("/agents/{agent_id}", summary="Update an agent")
def update_agent(agent_id: UUID, body: AgentPatch, request: Request, response: Response,
                 state: ChronicleState = State, ctx: CommandContext = Ctx) -> dict[str, Any]:
    """Change the fields given."""
    return execute(state, request, response, ctx, c.UpdateAgent, agent_id=agent_id, **body.model_dump())


@router.delete("/agents/{agent_id}", summary="Delete an agent")
def delete_agent(agent_id: UUID, request: Request, response: Response, reason: Annotated[Reason | None, Query()] = None,
                 state: ChronicleState = State, ctx: CommandContext = Ctx) -> dict[str, Any]:
    """Delete an agent; its executions stay."""
    return execute(state, request, response, ctx, c.DeleteAgent, agent_id=agent_id, reason=reason)


@router.post("/agents/{agent_id}/executions", status_code=201, summary="Record an execution of an agent")
def record_execution(agent_id: UUID, body: ExecutionIn, request: Request, response: Response,
                     state: ChronicleState = State, ctx: CommandContext = Ctx) -> dict[str, Any]:
    """Record one execution: input, output, duration, tokens; its id is given or made."""
    fields = body.model_dump()
    fields["execution_id"] = fields["execution_id"] or f"x-{uuid.uuid4().hex[:12]}"
    out = execute(state, request, response, ctx, c.RecordExecution, agent_id=agent_id, **fields)
    return {**out, "execution_id": fields["execution_id"]}


# -- every stream: undo, redo, history, diff ----------------------------------------------------

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
             state: ChronicleState = State, ctx: CommandContext = Ctx) -> dict[str, Any]:
        _stream_of_kind(state, kind, stream_id)
        return execute(state, request, response, ctx, c.Undo, stream_id=stream_id)

    def redo(request: Request, response: Response, stream_id: UUID = Path(..., alias=f"{single}_id"),
             state: ChronicleState = State, ctx: CommandContext = Ctx) -> dict[str, Any]:
        _stream_of_kind(state, kind, stream_id)
        return execute(state, request, response, ctx, c.Redo, stream_id=stream_id)

    def history(
        response: Response,
        stream_id: UUID = Path(..., alias=f"{single}_id"),
        version: int | None = Query(None, ge=1, description="the state at this version"),
        as_of: datetime | None = Query(None, description="the state as of this time (ISO 8601 with zone)"),
        after_version: int = Query(0, ge=0),
        limit: int = Query(100, ge=1, le=1000),
        state: ChronicleState = State,
        _: Any = Reader,
    ) -> dict[str, Any]:
        current = _stream_of_kind(state, kind, stream_id)
        response.headers["ETag"] = etag(current)
        if version is not None and as_of is not None:
            raise Problem(422, "invalid_query", "give version or as_of, not both", field="as_of")
        if version is not None or as_of is not None:
            if as_of is not None and as_of.tzinfo is None:
                raise Problem(422, "invalid_query", "as_of needs a time zone, e.g. 2025-01-01T00:00:00Z", field="as_of")
            at = state.service.state_at(stream_id, version=version, at=as_of)
            return {"stream_id": at.stream_id, "stream_type": at.stream_type, "version": at.version,
                    "current_version": current, "modified_at": at.modified_at.isoformat(), "state": at.state}
        entries = state.service.history(stream_id, after_version=after_version, limit=limit)
        return {"stream_id": str(stream_id), "current_version": current, "versions": [
            {"version": e.version, "type": e.type, "timestamp": e.timestamp.isoformat(), "payload": e.payload}
            for e in entries
        ]}

    def diff(
        stream_id: UUID = Path(..., alias=f"{single}_id"),
        from_version: int = Query(..., ge=1, alias="from"),
        to_version: int = Query(..., ge=1, alias="to"),
        state: ChronicleState = State,
        _: Any = Reader,
    ) -> dict[str, Any]:
        _stream_of_kind(state, kind, stream_id)
        result = state.service.diff(stream_id, from_version, to_version)
        return {"stream_id": result.stream_id, "from": result.from_version, "to": result.to_version,
                "changes": [asdict(change) for change in result.changes]}

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

