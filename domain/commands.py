"""Commands: what a caller asks the workspace to do, as pydantic models.

Every command may carry a `command_id` (repeating it returns the first result and appends
nothing). Commands on an existing stream may carry `expected_version` (a mismatch is a
conflict); without it the service retries conflicts a bounded number of times.
Field shapes are checked here; the aggregates check the rules.
"""

from __future__ import annotations

from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from domain.errors import DomainError


class CommandContext(BaseModel):
    """Who asks, in which session, and why: written to every event's metadata.

    The correlation id defaults to the command id (or a new id); the causation id names the
    event that caused this command, when one did.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    actor_id: str | None = Field(default=None, max_length=200)
    actor_type: Literal["user", "agent", "service", "system"] = "system"
    session_id: str | None = Field(default=None, max_length=200)
    correlation_id: str | None = Field(default=None, max_length=200)
    causation_id: str | None = Field(default=None, max_length=200)


class Command(BaseModel):
    """Base of every command."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    command_id: UUID | None = None


class StreamCommand(Command):
    """A command on an existing stream, optionally at an expected version."""

    expected_version: int | None = Field(default=None, ge=1)


# -- chains ------------------------------------------------------------------------------------


class CreateChain(Command):
    chain_id: UUID | None = None
    name: str
    description: str = ""
    metadata: dict[str, Any] = Field(default_factory=dict)


class UpdateChain(StreamCommand):
    chain_id: UUID
    name: str | None = None
    description: str | None = None
    metadata: dict[str, Any] | None = None


class UpdateCanvas(StreamCommand):
    chain_id: UUID
    canvas_state: dict[str, Any]
    viewport: dict[str, Any]


class AddNode(StreamCommand):
    chain_id: UUID
    node_id: str
    kind: str
    ref_id: str
    position: dict[str, Any] = Field(default_factory=dict)


class RemoveNode(StreamCommand):
    chain_id: UUID
    node_id: str


class DeleteChain(StreamCommand):
    chain_id: UUID
    reason: str | None = None


class CreateEdge(StreamCommand):
    chain_id: UUID
    edge_id: str
    source_id: str
    target_id: str
    type: str
    metadata: dict[str, Any] = Field(default_factory=dict)


class UpdateEdge(StreamCommand):
    chain_id: UUID
    edge_id: str
    type: str | None = None
    metadata: dict[str, Any] | None = None


class DeleteEdge(StreamCommand):
    chain_id: UUID
    edge_id: str
    reason: str | None = None


# -- documents ---------------------------------------------------------------------------------


class CreateDocument(Command):
    document_id: UUID | None = None
    namespace: str
    document_type: str
    title: str
    content: str | None = None
    body: dict[str, Any] | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class UpdateDocument(StreamCommand):
    document_id: UUID
    title: str | None = None
    content: str | None = None
    body: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None
    change_description: str = ""


class DeleteDocument(StreamCommand):
    document_id: UUID
    reason: str | None = None


class RestoreDocument(StreamCommand):
    document_id: UUID
    reason: str | None = None


class TagDocument(StreamCommand):
    document_id: UUID
    tag: str
    version: int


class UntagDocument(StreamCommand):
    document_id: UUID
    tag: str


# -- agents ------------------------------------------------------------------------------------


class CreateAgent(Command):
    agent_id: UUID | None = None
    name: str
    prompt: str
    model: str
    tools: list[Any] = Field(default_factory=list)
    metadata: dict[str, Any] = Field(default_factory=dict)


class UpdateAgent(StreamCommand):
    agent_id: UUID
    name: str | None = None
    prompt: str | None = None
    model: str | None = None
    tools: list[Any] | None = None
    metadata: dict[str, Any] | None = None


class DeleteAgent(StreamCommand):
    agent_id: UUID
    reason: str | None = None


class RecordExecution(StreamCommand):
    agent_id: UUID
    execution_id: str
    input: Any = None
    output: Any = None
    duration_ms: int
    tokens: int
    metadata: dict[str, Any] = Field(default_factory=dict)


# -- any stream --------------------------------------------------------------------------------


class Undo(StreamCommand):
    stream_id: UUID


class Redo(StreamCommand):
    stream_id: UUID


# The commands by the names an API or CLI may call them.
COMMANDS: dict[str, type[Command]] = {
    "create_chain": CreateChain,
    "update_chain": UpdateChain,
    "update_canvas": UpdateCanvas,
    "add_node": AddNode,
    "remove_node": RemoveNode,
    "delete_chain": DeleteChain,
    "create_edge": CreateEdge,
    "update_edge": UpdateEdge,
    "delete_edge": DeleteEdge,
    "create_document": CreateDocument,
    "update_document": UpdateDocument,
    "delete_document": DeleteDocument,
    "restore_document": RestoreDocument,
    "tag_document": TagDocument,
    "untag_document": UntagDocument,
    "create_agent": CreateAgent,
    "update_agent": UpdateAgent,
    "delete_agent": DeleteAgent,
    "record_execution": RecordExecution,
    "undo": Undo,
    "redo": Redo,
}


def parse_command(name: str, data: dict[str, Any]) -> Command:
    """The command called `name`, built from JSON-like `data`.

    Raises DomainError unknown_command, or invalid_command naming the first bad field.
    """
    try:
        command_class = COMMANDS[name]
    except KeyError:
        raise DomainError("unknown_command", f"no command called {str(name)[:80]!r}", field="command") from None
    try:
        return command_class.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or None
        raise DomainError("invalid_command", f"{name}: {field}: {first['msg']}", field=field) from None
