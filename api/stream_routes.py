"""The command routes every stream kind has alike: create, update and delete (chains, agents, documents).

Each call adds one route to a kind's router, named (and so its OpenAPI operation id) as a route
written out by hand would be: `create_chain`, `update_agent`, `delete_document`. The module
evaluates its annotations when a route is made, so each route's body model and path parameter
are the kind's own.
"""

from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Path, Query, Request, Response

from api.commanding import KINDS, CommandRequest, Ctx, created, execute
from api.schemas import CommandOut
from domain import commands as c
from domain.bounds import Reason


def _add(router: APIRouter, method: str, path: str, endpoint: Any, name: str, summary: str, description: str,
         **options: Any) -> None:
    """Register `endpoint` under `name` (its operation id) with its summary and description."""
    endpoint.__name__ = endpoint.__qualname__ = name
    endpoint.__doc__ = description
    router.api_route(path, methods=[method], summary=summary, **options)(endpoint)


def add_create(router: APIRouter, kind: str, body_model: type, command: type[c.Command], summary: str,
               description: str) -> None:
    """POST /<kind>: create a stream from the body's fields; 201 with Location, ETag and log position."""

    def create(body: body_model, request: Request, response: Response,  # type: ignore[valid-type]
               ctx: CommandRequest = Ctx) -> CommandOut:
        return created(response, kind, execute(request, response, ctx, command, **body.model_dump()))

    _add(router, "POST", f"/{kind}", create, f"create_{KINDS[kind]}", summary, description, status_code=201)


def add_update(router: APIRouter, kind: str, body_model: type, command: type[c.Command], summary: str,
               description: str) -> None:
    """PATCH /<kind>/{<type>_id}: change the fields the body gives."""
    field = f"{KINDS[kind]}_id"

    def update(stream_id: Annotated[UUID, Path(alias=field)], body: body_model,  # type: ignore[valid-type]
               request: Request, response: Response, ctx: CommandRequest = Ctx) -> CommandOut:
        return execute(request, response, ctx, command, **{field: stream_id}, **body.model_dump())

    _add(router, "PATCH", f"/{kind}/{{{field}}}", update, f"update_{KINDS[kind]}", summary, description)


def add_delete(router: APIRouter, kind: str, command: type[c.Command], summary: str, description: str) -> None:
    """DELETE /<kind>/{<type>_id}?reason=: delete the stream (its history stays)."""
    field = f"{KINDS[kind]}_id"

    def delete(stream_id: Annotated[UUID, Path(alias=field)], request: Request, response: Response,
               reason: Annotated[Reason | None, Query()] = None, ctx: CommandRequest = Ctx) -> CommandOut:
        return execute(request, response, ctx, command, **{field: stream_id}, reason=reason)

    _add(router, "DELETE", f"/{kind}/{{{field}}}", delete, f"delete_{KINDS[kind]}", summary, description)
