"""What every command route shares: request-body base, the command context, and `execute`.

A command route builds a domain command and hands it to the application service. Its
response carries the stream's new version (ETag, `stream_version`) and the log position it
reached (X-Chronicle-Position); If-Match sets the expected version (412 when it has moved).
"""

from __future__ import annotations

import uuid
from typing import Any
from uuid import UUID

from fastapi import Depends, Request, Response
from pydantic import BaseModel, ConfigDict

from api.deps import ChronicleState, CommandRequest, chronicle, command_context, etag
from api.problems import Problem
from domain import commands as c
from domain.errors import ConflictError, DomainError, NotFoundError

IDEMPOTENCY_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://chronicle/api/idempotency")
# The URL segment of each stream kind, and its stream type.
KINDS = {"chains": "chain", "documents": "document", "agents": "agent"}
Ctx = Depends(command_context)
State = Depends(chronicle)


class Strict(BaseModel):
    """A request body: unknown fields refused; each field's bounds are the domain's (domain.bounds)."""

    model_config = ConfigDict(extra="forbid")


class ReasonIn(c.Reasoned, Strict):
    """Why: an optional reason recorded with the event."""


def _command_id(request: Request, ctx: CommandRequest) -> UUID | None:
    """With an Idempotency-Key, the command id derived from it: the domain dedups retries too."""
    key = request.headers.get("idempotency-key")
    return uuid.uuid5(IDEMPOTENCY_NAMESPACE, f"{ctx.principal.key_id}:{key}") if key else None


def _stream_type_of(command_class: type[c.Command], fields: dict[str, Any]) -> str | None:
    """The stream type a command addresses, from the id field it names (chain_id, document_id, ...)."""
    for stream_type in KINDS.values():
        if f"{stream_type}_id" in fields and f"{stream_type}_id" in command_class.model_fields:
            return stream_type
    return None


def execute(
    state: ChronicleState, request: Request, response: Response, ctx: CommandRequest, command_class: type[c.Command],
    **fields: Any,
) -> dict[str, Any]:
    """Build the command, run it through the application service, answer with version and position.

    A version conflict is 412 when the caller sent If-Match, else 409; both carry the current
    version. A stream that does not exist is `<type>_not_found` (404), as on the reads.
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
        correlation_id=ctx.correlation_id, causation_id=ctx.causation_id, subject_id=ctx.subject_id,
    )
    try:
        result = state.service.handle(command, context)
    except ConflictError as exc:
        if ctx.expected_version is not None:
            raise Problem(412, "precondition_failed",
                          f"If-Match names version {ctx.expected_version}; the stream is at {exc.current_version}",
                          field="If-Match", current_stream_version=exc.current_version,
                          headers={"ETag": etag(exc.current_version)}) from None
        raise Problem(409, "version_conflict", str(exc), field=exc.field,
                      current_stream_version=exc.current_version) from None
    except NotFoundError as exc:
        stream_type = _stream_type_of(command_class, fields)
        if stream_type is None:
            raise
        raise Problem(404, f"{stream_type}_not_found", str(exc), field=f"{stream_type}_id") from None
    response.headers["ETag"] = etag(result.version)
    if result.position is not None:
        response.headers["X-Chronicle-Position"] = str(result.position)
    return {
        "stream_id": result.stream_id,
        "stream_version": result.version,
        "position": result.position,
        "appended": result.appended,
        "duplicate": result.duplicate,
        "correlation_id": ctx.correlation_id,
    }


def execute_adding(
    state: ChronicleState, request: Request, response: Response, ctx: CommandRequest, command_class: type[c.Command],
    body: BaseModel, made_id: tuple[str, str], **fields: Any,
) -> dict[str, Any]:
    """`execute` a command that adds an element (an edge, an execution) whose id the body gives or
    is made here as `<prefix>-<12 hex digits>`; `made_id` is (id field, prefix). The answer names the id."""
    id_field, prefix = made_id
    values = body.model_dump()
    values[id_field] = values[id_field] or f"{prefix}-{uuid.uuid4().hex[:12]}"
    return {**execute(state, request, response, ctx, command_class, **fields, **values), id_field: values[id_field]}


def created(response: Response, kind: str, body: dict[str, Any]) -> dict[str, Any]:
    """Mark a command's response as a creation: 201 with the new resource's Location."""
    response.status_code = 201
    response.headers["Location"] = f"/v1/{kind}/{body['stream_id']}"
    return body
