"""Commands on chains and agents over HTTP (documents: routes_document_commands).

Each route builds a domain command and runs it through `api.commanding.execute`.
"""

from __future__ import annotations

import uuid
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Path, Query, Request, Response
from pydantic import Field

from api.commanding import Ctx, State, Strict, created, execute
from api.deps import ChronicleState, CommandRequest
from api.schemas import ExactRoute, CommandOut, EdgeCommandOut, ExecutionCommandOut
from domain import commands as c
from domain.bounds import CanvasState, Identifier, Reason, Viewport

router = APIRouter(prefix="/v1", tags=["commands"], route_class=ExactRoute)


# -- chains ----------------------------------------------------------------------------------

class ChainIn(c.NewChain, Strict):
    pass


class ChainPatch(c.ChainChanges, Strict):
    pass


class CanvasIn(Strict):
    canvas_state: CanvasState
    viewport: Viewport = Field(default_factory=dict)


class NodeIn(c.NodeFields, Strict):
    pass


class EdgeIn(c.EdgeFields, Strict):
    edge_id: Identifier | None = None


class EdgePatch(c.EdgeChanges, Strict):
    pass


@router.post("/chains", status_code=201, summary="Create a chain")
def create_chain(body: ChainIn, request: Request, response: Response, state: ChronicleState = State,
                 ctx: CommandRequest = Ctx) -> CommandOut:
    """Create a chain; its id is given or made. 201 with Location, ETag and log position."""
    return created(response, "chains", execute(state, request, response, ctx, c.CreateChain, **body.model_dump()))


@router.patch("/chains/{chain_id}", summary="Update a chain's name, description or metadata")
def update_chain(chain_id: UUID, body: ChainPatch, request: Request, response: Response,
                 state: ChronicleState = State, ctx: CommandRequest = Ctx) -> CommandOut:
    """Change the fields given; fields left out stay as they are."""
    return execute(state, request, response, ctx, c.UpdateChain, chain_id=chain_id, **body.model_dump())


@router.delete("/chains/{chain_id}", summary="Delete a chain")
def delete_chain(chain_id: UUID, request: Request, response: Response, reason: Annotated[Reason | None, Query()] = None,
                 state: ChronicleState = State, ctx: CommandRequest = Ctx) -> CommandOut:
    """Delete a chain; its history stays."""
    return execute(state, request, response, ctx, c.DeleteChain, chain_id=chain_id, reason=reason)


@router.put("/chains/{chain_id}/canvas", summary="Replace a chain's canvas state and viewport")
def put_canvas(chain_id: UUID, body: CanvasIn, request: Request, response: Response,
               state: ChronicleState = State, ctx: CommandRequest = Ctx) -> CommandOut:
    """Replace the canvas; an identical canvas appends nothing."""
    return execute(state, request, response, ctx, c.UpdateCanvas, chain_id=chain_id, **body.model_dump())


@router.post("/chains/{chain_id}/nodes", summary="Put a document or agent on the canvas")
def add_node(chain_id: UUID, body: NodeIn, request: Request, response: Response,
             state: ChronicleState = State, ctx: CommandRequest = Ctx) -> CommandOut:
    """Add a node that refers to an existing document or agent."""
    return execute(state, request, response, ctx, c.AddNode, chain_id=chain_id, **body.model_dump())


@router.delete("/chains/{chain_id}/nodes/{node_id}", summary="Take a node off the canvas")
def remove_node(chain_id: UUID, request: Request, response: Response, node_id: Annotated[Identifier, Path()],
                state: ChronicleState = State, ctx: CommandRequest = Ctx) -> CommandOut:
    """Remove a node (the domain refuses to leave its edges dangling)."""
    return execute(state, request, response, ctx, c.RemoveNode, chain_id=chain_id, node_id=node_id)


@router.post("/chains/{chain_id}/edges", status_code=201, summary="Join two nodes of a chain")
def create_edge(chain_id: UUID, body: EdgeIn, request: Request, response: Response,
                state: ChronicleState = State, ctx: CommandRequest = Ctx) -> EdgeCommandOut:
    """Create an edge between two different nodes of this chain; its id is given or made."""
    fields = body.model_dump()
    fields["edge_id"] = fields["edge_id"] or f"e-{uuid.uuid4().hex[:12]}"
    out = execute(state, request, response, ctx, c.CreateEdge, chain_id=chain_id, **fields)
    response.status_code = 201
    response.headers["Location"] = f"/v1/chains/{chain_id}/edges"
    return {**out, "edge_id": fields["edge_id"]}


@router.patch("/chains/{chain_id}/edges/{edge_id}", summary="Update an edge")
def update_edge(chain_id: UUID, body: EdgePatch, request: Request, response: Response,
                edge_id: Annotated[Identifier, Path()], state: ChronicleState = State,
                ctx: CommandRequest = Ctx) -> CommandOut:
    """Change an edge's type or metadata."""
    return execute(state, request, response, ctx, c.UpdateEdge, chain_id=chain_id, edge_id=edge_id,
                   **body.model_dump())


@router.delete("/chains/{chain_id}/edges/{edge_id}", summary="Delete an edge")
def delete_edge(chain_id: UUID, request: Request, response: Response, edge_id: Annotated[Identifier, Path()],
                state: ChronicleState = State, ctx: CommandRequest = Ctx) -> CommandOut:
    """Delete an edge of this chain."""
    return execute(state, request, response, ctx, c.DeleteEdge, chain_id=chain_id, edge_id=edge_id)


# -- agents ----------------------------------------------------------------------------------

class AgentIn(c.NewAgent, Strict):
    pass


class AgentPatch(c.AgentChanges, Strict):
    pass


class ExecutionIn(c.ExecutionFields, Strict):
    execution_id: Identifier | None = None


@router.post("/agents", status_code=201, summary="Create an agent")
def create_agent(body: AgentIn, request: Request, response: Response, state: ChronicleState = State,
                 ctx: CommandRequest = Ctx) -> CommandOut:
    """Create an agent; its id is given or made."""
    return created(response, "agents", execute(state, request, response, ctx, c.CreateAgent, **body.model_dump()))


@router.patch("/agents/{agent_id}", summary="Update an agent")
def update_agent(agent_id: UUID, body: AgentPatch, request: Request, response: Response,
                 state: ChronicleState = State, ctx: CommandRequest = Ctx) -> CommandOut:
    """Change the fields given."""
    return execute(state, request, response, ctx, c.UpdateAgent, agent_id=agent_id, **body.model_dump())


@router.delete("/agents/{agent_id}", summary="Delete an agent")
def delete_agent(agent_id: UUID, request: Request, response: Response, reason: Annotated[Reason | None, Query()] = None,
                 state: ChronicleState = State, ctx: CommandRequest = Ctx) -> CommandOut:
    """Delete an agent; its executions stay."""
    return execute(state, request, response, ctx, c.DeleteAgent, agent_id=agent_id, reason=reason)


@router.post("/agents/{agent_id}/executions", status_code=201, summary="Record an execution of an agent")
def record_execution(agent_id: UUID, body: ExecutionIn, request: Request, response: Response,
                     state: ChronicleState = State, ctx: CommandRequest = Ctx) -> ExecutionCommandOut:
    """Record one execution: input, output, duration, tokens; its id is given or made."""
    fields = body.model_dump()
    fields["execution_id"] = fields["execution_id"] or f"x-{uuid.uuid4().hex[:12]}"
    out = execute(state, request, response, ctx, c.RecordExecution, agent_id=agent_id, **fields)
    return {**out, "execution_id": fields["execution_id"]}
