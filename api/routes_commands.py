"""Commands on chains and agents over HTTP (documents: routes_document_commands).

Each route builds a domain command and runs it through `api.commanding.execute`; the create,
update and delete routes every stream kind has alike are made by `api.stream_routes`. Request
bodies derive from the field sets they share with their commands (domain.commands).
"""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Path, Request, Response
from pydantic import Field

from api.commanding import CommandRequest, Ctx, Strict, execute, execute_adding
from api.schemas import ExactRoute, CommandOut, EdgeCommandOut, ExecutionCommandOut
from api.stream_routes import add_create, add_delete, add_update
from domain import commands as c
from domain.bounds import CanvasState, Identifier, Viewport

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


add_create(router, "chains", ChainIn, c.CreateChain, "Create a chain",
           "Create a chain; its id is given or made. 201 with Location, ETag and log position.")
add_update(router, "chains", ChainPatch, c.UpdateChain, "Update a chain's name, description or metadata",
           "Change the fields given; fields left out stay as they are.")
add_delete(router, "chains", c.DeleteChain, "Delete a chain", "Delete a chain; its history stays.")


@router.put("/chains/{chain_id}/canvas", summary="Replace a chain's canvas state and viewport")
def put_canvas(chain_id: UUID, body: CanvasIn, request: Request, response: Response,
               ctx: CommandRequest = Ctx) -> CommandOut:
    """Replace the canvas; an identical canvas appends nothing."""
    return execute(request, response, ctx, c.UpdateCanvas, chain_id=chain_id, **body.model_dump())


@router.post("/chains/{chain_id}/nodes", summary="Put a document or agent on the canvas")
def add_node(chain_id: UUID, body: NodeIn, request: Request, response: Response,
             ctx: CommandRequest = Ctx) -> CommandOut:
    """Add a node that refers to an existing document or agent."""
    return execute(request, response, ctx, c.AddNode, chain_id=chain_id, **body.model_dump())


@router.delete("/chains/{chain_id}/nodes/{node_id}", summary="Take a node off the canvas")
def remove_node(chain_id: UUID, request: Request, response: Response, node_id: Annotated[Identifier, Path()],
                ctx: CommandRequest = Ctx) -> CommandOut:
    """Remove a node (the domain refuses to leave its edges dangling)."""
    return execute(request, response, ctx, c.RemoveNode, chain_id=chain_id, node_id=node_id)


@router.post("/chains/{chain_id}/edges", status_code=201, summary="Join two nodes of a chain")
def create_edge(chain_id: UUID, body: EdgeIn, request: Request, response: Response,
                ctx: CommandRequest = Ctx) -> EdgeCommandOut:
    """Create an edge between two different nodes of this chain; its id is given or made."""
    out = execute_adding(request, response, ctx, c.CreateEdge, body, ("edge_id", "e"), chain_id=chain_id)
    response.status_code = 201
    response.headers["Location"] = f"/v1/chains/{chain_id}/edges"
    return out


@router.patch("/chains/{chain_id}/edges/{edge_id}", summary="Update an edge")
def update_edge(chain_id: UUID, body: EdgePatch, request: Request, response: Response,
                edge_id: Annotated[Identifier, Path()], ctx: CommandRequest = Ctx) -> CommandOut:
    """Change an edge's type or metadata."""
    return execute(request, response, ctx, c.UpdateEdge, chain_id=chain_id, edge_id=edge_id,
                   **body.model_dump())


@router.delete("/chains/{chain_id}/edges/{edge_id}", summary="Delete an edge")
def delete_edge(chain_id: UUID, request: Request, response: Response, edge_id: Annotated[Identifier, Path()],
                ctx: CommandRequest = Ctx) -> CommandOut:
    """Delete an edge of this chain."""
    return execute(request, response, ctx, c.DeleteEdge, chain_id=chain_id, edge_id=edge_id)


# -- agents ----------------------------------------------------------------------------------

class AgentIn(c.NewAgent, Strict):
    pass


class AgentPatch(c.AgentChanges, Strict):
    pass


class ExecutionIn(c.ExecutionFields, Strict):
    execution_id: Identifier | None = None


add_create(router, "agents", AgentIn, c.CreateAgent, "Create an agent", "Create an agent; its id is given or made.")
add_update(router, "agents", AgentPatch, c.UpdateAgent, "Update an agent", "Change the fields given.")
add_delete(router, "agents", c.DeleteAgent, "Delete an agent", "Delete an agent; its executions stay.")


@router.post("/agents/{agent_id}/executions", status_code=201, summary="Record an execution of an agent")
def record_execution(agent_id: UUID, body: ExecutionIn, request: Request, response: Response,
                     ctx: CommandRequest = Ctx) -> ExecutionCommandOut:
    """Record one execution: input, output, duration, tokens; its id is given or made."""
    return execute_adding(request, response, ctx, c.RecordExecution, body, ("execution_id", "x"),
                          agent_id=agent_id)
