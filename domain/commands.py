"""Commands: what a caller asks the workspace to do, as pydantic models.

Every command may carry a `command_id` (repeating it returns the first result and appends
nothing). Commands on an existing stream may carry `expected_version` (a mismatch is a
conflict); without it the service retries conflicts a bounded number of times.
Field shapes and storage bounds (domain.bounds) are checked here, when a command is built: a
value out of bounds raises DomainError naming the field. The aggregates check the rules.
"""

from __future__ import annotations

from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from domain.bounds import (
    Body, CanvasState, ChangeDescription, ContextId, Content, Count, Description, DocumentVersion, EdgeMetadata,
    ExecutionData, Identifier, Metadata, ModelName, Name, NodePosition, Prompt, Reason, StreamVersion, Title, Tools,
    Viewport, refusal,
)


class CommandContext(BaseModel):
    """Who asks, in which session, and why: written to every event's metadata.

    The correlation id defaults to the command id (or a new id); the causation id names the
    event that caused this command, when one did.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    actor_id: ContextId | None = None
    actor_type: Literal["user", "agent", "service", "system"] = "system"
    session_id: ContextId | None = None
    correlation_id: ContextId | None = None
    causation_id: ContextId | None = None
    # The person whose personal fields this command writes (default: the stream's, else the actor).
    subject_id: ContextId | None = None

    def __init__(self, /, **data: Any) -> None:
        """The context, its ids within domain.bounds; anything else is a DomainError naming the field."""
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise refusal(exc, type(self).__name__) from None


class Command(BaseModel):
    """Base of every command."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    command_id: UUID | None = None

    def __init__(self, /, **data: Any) -> None:
        """The command, its fields within domain.bounds; anything else is a DomainError naming the field."""
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise refusal(exc, type(self).__name__) from None


class StreamCommand(Command):
    """A command on an existing stream, optionally at an expected version."""

    expected_version: StreamVersion | None = None


# -- chains ------------------------------------------------------------------------------------


class CreateChain(Command):
    chain_id: UUID | None = None
    name: Name
    description: Description = ""
    metadata: Metadata = Field(default_factory=dict)


class UpdateChain(StreamCommand):
    chain_id: UUID
    name: Name | None = None
    description: Description | None = None
    metadata: Metadata | None = None


class UpdateCanvas(StreamCommand):
    chain_id: UUID
    canvas_state: CanvasState
    viewport: Viewport


class AddNode(StreamCommand):
    chain_id: UUID
    node_id: Identifier
    kind: Identifier
    ref_id: Identifier
    position: NodePosition = Field(default_factory=dict)


class RemoveNode(StreamCommand):
    chain_id: UUID
    node_id: Identifier


class DeleteChain(StreamCommand):
    chain_id: UUID
    reason: Reason | None = None


class CreateEdge(StreamCommand):
    chain_id: UUID
    edge_id: Identifier
    source_id: Identifier
    target_id: Identifier
    type: Identifier
    metadata: EdgeMetadata = Field(default_factory=dict)


class UpdateEdge(StreamCommand):
    chain_id: UUID
    edge_id: Identifier
    type: Identifier | None = None
    metadata: EdgeMetadata | None = None


class DeleteEdge(StreamCommand):
    chain_id: UUID
    edge_id: Identifier
    reason: Reason | None = None


# -- documents ---------------------------------------------------------------------------------


class CreateDocument(Command):
    document_id: UUID | None = None
    namespace: Identifier
    document_type: Identifier
    title: Title
    content: Content | None = None
    body: Body | None = None
    metadata: Metadata = Field(default_factory=dict)


class UpdateDocument(StreamCommand):
    document_id: UUID
    title: Title | None = None
    content: Content | None = None
    body: Body | None = None
    metadata: Metadata | None = None
    change_description: ChangeDescription = ""


class DeleteDocument(StreamCommand):
    document_id: UUID
    reason: Reason | None = None


class RestoreDocument(StreamCommand):
    document_id: UUID
    reason: Reason | None = None


class TagDocument(StreamCommand):
    document_id: UUID
    tag: Identifier
    version: DocumentVersion


class UntagDocument(StreamCommand):
    document_id: UUID
    tag: Identifier


# -- agents ------------------------------------------------------------------------------------


class CreateAgent(Command):
    agent_id: UUID | None = None
    name: Name
    prompt: Prompt
    model: ModelName
    tools: Tools = Field(default_factory=list)
    metadata: Metadata = Field(default_factory=dict)


class UpdateAgent(StreamCommand):
    agent_id: UUID
    name: Name | None = None
    prompt: Prompt | None = None
    model: ModelName | None = None
    tools: Tools | None = None
    metadata: Metadata | None = None


class DeleteAgent(StreamCommand):
    agent_id: UUID
    reason: Reason | None = None


class RecordExecution(StreamCommand):
    agent_id: UUID
    execution_id: Identifier
    input: ExecutionData = None
    output: ExecutionData = None
    duration_ms: Count
    tokens: Count
    metadata: Metadata = Field(default_factory=dict)


# -- any stream --------------------------------------------------------------------------------


class Undo(StreamCommand):
    stream_id: UUID


class Redo(StreamCommand):
    stream_id: UUID
