"""Commands: what a caller asks the workspace to do, as pydantic models.

Every command may carry a `command_id` (repeating it returns the first result and appends
nothing). Commands on an existing stream may carry `expected_version` (a mismatch is a
conflict); without it the service retries conflicts a bounded number of times.
Field shapes and storage bounds (domain.bounds) are checked here, when a command is built: a
value out of bounds raises DomainError naming the field. The aggregates check the rules.
The field sets a request body (api) shares with its command are declared once, here.
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


class Refusing(BaseModel):
    """A frozen model that refuses unknown fields and values out of domain.bounds when built."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def __init__(self, /, **data: Any) -> None:
        """The model, its fields within domain.bounds; anything else is a DomainError naming the field."""
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise refusal(exc, type(self).__name__) from None


class CommandContext(Refusing):
    """Who asks, in which session, and why: written to every event's metadata.

    The correlation id defaults to the command id (or a new id); the causation id names the
    event that caused this command, when one did.
    """

    actor_id: ContextId | None = None
    actor_type: Literal["user", "agent", "service", "system"] = "system"
    session_id: ContextId | None = None
    correlation_id: ContextId | None = None
    causation_id: ContextId | None = None
    # The person whose personal fields this command writes (default: the stream's, else the actor).
    subject_id: ContextId | None = None


class Command(Refusing):
    """Base of every command."""

    command_id: UUID | None = None


class StreamCommand(Command):
    """A command on an existing stream, optionally at an expected version."""

    expected_version: StreamVersion | None = None


# -- field sets: a command's fields that requests (api) and events share -----------------------


class Reasoned(BaseModel):
    """Why: an optional reason recorded with the event."""

    reason: Reason | None = None


class NewChain(BaseModel):
    """A new chain's fields; its id is given or made."""

    chain_id: UUID | None = None
    name: Name
    description: Description = ""
    metadata: Metadata = Field(default_factory=dict)


class ChainChanges(BaseModel):
    """A chain's fields to change; those left out (None) stay as they are."""

    name: Name | None = None
    description: Description | None = None
    metadata: Metadata | None = None


class NodeFields(BaseModel):
    """A node: a document or agent (`kind`, `ref_id`) on a chain's canvas."""

    node_id: Identifier
    kind: Identifier
    ref_id: Identifier
    position: NodePosition = Field(default_factory=dict)


class EdgeFields(BaseModel):
    """An edge: a typed link from one node of a chain to another."""

    edge_id: Identifier
    source_id: Identifier
    target_id: Identifier
    type: Identifier
    metadata: EdgeMetadata = Field(default_factory=dict)


class EdgeChanges(BaseModel):
    """An edge's fields to change; those left out (None) stay as they are."""

    type: Identifier | None = None
    metadata: EdgeMetadata | None = None


class DocumentChanges(BaseModel):
    """A document's fields to change (a new version), with a description of the change."""

    title: Title | None = None
    content: Content | None = None
    body: Body | None = None
    metadata: Metadata | None = None
    change_description: ChangeDescription = ""


class NewAgent(BaseModel):
    """A new agent's fields; its id is given or made."""

    agent_id: UUID | None = None
    name: Name
    prompt: Prompt
    model: ModelName
    tools: Tools = Field(default_factory=list)
    metadata: Metadata = Field(default_factory=dict)


class AgentChanges(BaseModel):
    """An agent's fields to change; those left out (None) stay as they are."""

    name: Name | None = None
    prompt: Prompt | None = None
    model: ModelName | None = None
    tools: Tools | None = None
    metadata: Metadata | None = None


class ExecutionFields(BaseModel):
    """One run of an agent: its input, output, duration and tokens."""

    execution_id: Identifier
    input: ExecutionData = None
    output: ExecutionData = None
    duration_ms: Count
    tokens: Count
    metadata: Metadata = Field(default_factory=dict)


# -- chains ------------------------------------------------------------------------------------


class CreateChain(NewChain, Command):
    pass


class ChainCommand(StreamCommand):
    """A command on an existing chain."""

    chain_id: UUID


class UpdateChain(ChainChanges, ChainCommand):
    pass


class UpdateCanvas(ChainCommand):
    canvas_state: CanvasState
    viewport: Viewport


class AddNode(NodeFields, ChainCommand):
    pass


class RemoveNode(ChainCommand):
    node_id: Identifier


class DeleteChain(Reasoned, ChainCommand):
    pass


class CreateEdge(EdgeFields, ChainCommand):
    pass


class EdgeCommand(ChainCommand):
    """A command on an existing edge of a chain."""

    edge_id: Identifier


class UpdateEdge(EdgeChanges, EdgeCommand):
    pass


class DeleteEdge(Reasoned, EdgeCommand):
    pass


# -- documents ---------------------------------------------------------------------------------


class CreateDocument(Command):
    document_id: UUID | None = None
    namespace: Identifier
    document_type: Identifier
    title: Title
    content: Content | None = None
    body: Body | None = None
    metadata: Metadata = Field(default_factory=dict)


class DocumentCommand(StreamCommand):
    """A command on an existing document."""

    document_id: UUID


class UpdateDocument(DocumentChanges, DocumentCommand):
    pass


class DeleteDocument(Reasoned, DocumentCommand):
    pass


class RestoreDocument(Reasoned, DocumentCommand):
    pass


class TagDocument(DocumentCommand):
    tag: Identifier
    version: DocumentVersion


class UntagDocument(DocumentCommand):
    tag: Identifier


# -- agents ------------------------------------------------------------------------------------


class CreateAgent(NewAgent, Command):
    pass


class AgentCommand(StreamCommand):
    """A command on an existing agent."""

    agent_id: UUID


class UpdateAgent(AgentChanges, AgentCommand):
    pass


class DeleteAgent(Reasoned, AgentCommand):
    pass


class RecordExecution(ExecutionFields, AgentCommand):
    pass


# -- any stream --------------------------------------------------------------------------------


class Undo(StreamCommand):
    stream_id: UUID


class Redo(StreamCommand):
    stream_id: UUID
