"""What every command route shares: request-body base, the command context, and `execute`.

A command route builds a domain command and hands it to the application service. Its
response carries the stream's new version (ETag, `stream_version`) and the log position it
reached (X-Chronicle-Position); If-Match sets the expected version (412 when it has moved).
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from fastapi import Depends, Header, Request, Response
from pydantic import BaseModel, ConfigDict

from api.deps import ChronicleState, Operator, authorize, chronicle, etag, parse_if_match
from api.problems import Problem
from domain import commands as c
from domain.bounds import MAX_CONTEXT_ID_CHARS
from domain.errors import ConflictError, DomainError, NotFoundError
from service_layer.keys import ApiKey

# Session, correlation and causation ids land in event metadata (btree expression indexes) and
# snapshot rows: at most domain.bounds.MAX_CONTEXT_ID_CHARS characters.
_HEADER_ID = re.compile(rf"^[A-Za-z0-9][A-Za-z0-9._:@/+=-]{{0,{MAX_CONTEXT_ID_CHARS - 1}}}$")


def _header_id(value: str | None, name: str) -> str | None:
    if value is None:
        return None
    if not _HEADER_ID.match(value):
        raise Problem(422, "invalid_header", f"{name} must be 1-{MAX_CONTEXT_ID_CHARS} letters, digits or ._:@/+=-",
                      field=name)
    return value


@dataclass(frozen=True)
class CommandRequest:
    """A command as the HTTP API received it: its key, sender, session, correlation and causation
    (the event metadata), and its If-Match."""

    principal: ApiKey
    actor_id: str
    actor_type: str
    session_id: str | None
    correlation_id: str
    causation_id: str | None
    expected_version: int | None
    subject_id: str | None = None

    def metadata(self) -> dict[str, Any]:
        """The metadata every event of this command carries."""
        data = {
            "actor_id": self.actor_id,
            "actor_type": self.actor_type,
            "session_id": self.session_id,
            "correlation_id": self.correlation_id,
            "causation_id": self.causation_id,
            "subject_id": self.subject_id,
            "api_key_id": self.principal.key_id,
        }
        return {k: v for k, v in data.items() if v is not None}


# The headers a command reads, by their ASGI (lower-case) names; api/openapi_doc.py documents them.
COMMAND_HEADERS = (b"x-session-id", b"x-correlation-id", b"x-causation-id", b"x-subject-id", b"if-match")


async def command_context(request: Request) -> CommandRequest:
    """A writer's command context: the key's actor, the session headers and If-Match.

    One dependency that checks the key and reads its headers itself (the key first, then If-Match,
    then the ids), in one pass over the raw headers: each dependency and header parameter FastAPI
    solves costs a command time in the event loop. A missing correlation id gets a fresh one, so
    every command's events share one.
    """
    principal = authorize(request, "write")
    sent: dict[bytes, str] = {}
    for name, value in request.scope["headers"]:
        if name in COMMAND_HEADERS and name not in sent:  # the first of a repeated header, as Starlette's get
            sent[name] = value.decode("latin-1")
    expected_version = parse_if_match(sent.get(b"if-match"))
    return CommandRequest(
        principal=principal,
        actor_id=principal.actor_id,
        actor_type=principal.actor_type,
        session_id=_header_id(sent.get(b"x-session-id"), "X-Session-Id"),
        correlation_id=_header_id(sent.get(b"x-correlation-id"), "X-Correlation-Id") or str(uuid.uuid4()),
        causation_id=_header_id(sent.get(b"x-causation-id"), "X-Causation-Id"),
        expected_version=expected_version,
        subject_id=_header_id(sent.get(b"x-subject-id"), "X-Subject-Id"),
    )


command_context.permission = "write"  # type: ignore[attr-defined]  # for the OpenAPI document


async def operator_context(
    principal: ApiKey = Operator,
    correlation_id: str | None = Header(None, alias="X-Correlation-Id"),
) -> CommandRequest:
    """An operator's context, for the events that record operator actions."""
    return CommandRequest(
        principal=principal, actor_id=principal.actor_id, actor_type=principal.actor_type,
        session_id=None, correlation_id=_header_id(correlation_id, "X-Correlation-Id") or str(uuid.uuid4()),
        causation_id=None, expected_version=None,
    )


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
    request: Request, response: Response, ctx: CommandRequest, command_class: type[c.Command], **fields: Any,
) -> dict[str, Any]:
    """Build the command, run it through the application service, answer with version and position.

    A version conflict is 412 when the caller sent If-Match, else 409; both carry the current
    version. A stream that does not exist is `<type>_not_found` (404), as on the reads.
    """
    state: ChronicleState = request.app.state.chronicle  # not a dependency: one less to solve a request
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
    request: Request, response: Response, ctx: CommandRequest, command_class: type[c.Command], body: BaseModel,
    made_id: tuple[str, str], **fields: Any,
) -> dict[str, Any]:
    """`execute` a command that adds an element (an edge, an execution) whose id the body gives or
    is made here as `<prefix>-<12 hex digits>`; `made_id` is (id field, prefix). The answer names the id."""
    id_field, prefix = made_id
    values = body.model_dump()
    values[id_field] = values[id_field] or f"{prefix}-{uuid.uuid4().hex[:12]}"
    return {**execute(request, response, ctx, command_class, **fields, **values), id_field: values[id_field]}


def created(response: Response, kind: str, body: dict[str, Any]) -> dict[str, Any]:
    """Mark a command's response as a creation: 201 with the new resource's Location."""
    response.status_code = 201
    response.headers["Location"] = f"/v1/{kind}/{body['stream_id']}"
    return body
