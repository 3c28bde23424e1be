"""The shapes Chronicle answers with, as pydantic models (the server's /openapi.json names them alike).

Models keep fields the server adds later (extra="allow"), so a newer server never breaks an
older client. Two versions are named apart: `stream_version` is the stream's (ETag, If-Match),
`document_version` a document's own content numbering.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Model(BaseModel):
    """A response body: the declared fields typed, any others kept."""

    model_config = ConfigDict(extra="allow")


class CommandResult(Model):
    """What a command did: the stream's new version and the log position it reached."""

    stream_id: str
    stream_version: int
    position: int | None = None
    appended: int
    duplicate: bool = Field(description="this command had already run: nothing appended again")
    correlation_id: str | None = None
    edge_id: str | None = None
    execution_id: str | None = None
    replayed: bool = Field(False, description="the server answered a retry with its stored first answer")


class ReadModel(Model):
    """What every read row carries: the stream version and log position that shaped it."""

    stream_version: int
    last_position: int | None = None
    created_at: str | None = None
    updated_at: str | None = None


class Document(ReadModel):
    document_id: str
    namespace: str
    type: str
    title: str
    content: str | None = None
    body: Any = None
    metadata: dict[str, Any] | None = None
    document_version: int
    tags: dict[str, int] | None = None


class DocumentVersion(Model):
    document_id: str
    document_version: int
    title: str | None = None
    content: str | None = None
    body: Any = None
    change_description: str | None = None
    stream_version: int


class Agent(ReadModel):
    agent_id: str
    name: str
    prompt: str | None = None
    model: str | None = None
    tools: list[Any] | None = None
    metadata: dict[str, Any] | None = None


class Execution(Model):
    agent_id: str
    execution_id: str
    input: Any = None
    output: Any = None
    duration_ms: int | None = None
    tokens: int | None = None
    stream_version: int


class Edge(Model):
    edge_id: str
    source_id: str
    target_id: str
    type: str
    metadata: dict[str, Any] | None = None
    stream_version: int


class Chain(ReadModel):
    chain_id: str
    name: str
    description: str | None = None
    metadata: dict[str, Any] | None = None
    canvas_state: Any = None
    viewport: Any = None
    nodes: Any = None
    edges: list[Edge] | None = None


class Page(Model):
    """One page of a list; pass `next_cursor` back as `cursor` for the next (None: the last page)."""

    next_cursor: str | None = None


class DocumentPage(Page):
    documents: list[Document]


class AgentPage(Page):
    agents: list[Agent]


class ChainPage(Page):
    chains: list[Chain]


class ExecutionPage(Page):
    executions: list[Execution]


class Event(Model):
    """One stored event, as GET /v1/events and the subscription feed send it."""

    position: int
    event_id: str
    stream_id: str
    stream_type: str
    stream_version: int
    type: str
    schema_version: int
    payload: Any
    metadata: dict[str, Any] | None = None
    recorded_at: str
    partition: int | None = Field(None, description="the consumer-group partition (group deliveries only)")


class EventPage(Page):
    events: list[Event]


class Membership(Model):
    """A consumer-group member's lease and the partitions it owns."""

    member_id: str
    group: str
    name: str | None = None
    lease_seconds: int | None = None
    lease_expires_at: str
    partitions: list[int]


class GroupBatch(Model):
    """Events for one member, in position order within each partition it owns."""

    events: list[Event]
    partitions: list[int]
    position: int | None = Field(None, description="the server read up to here: ack it once the batch is handled")
