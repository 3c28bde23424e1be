"""Typed commands and reads for chains, documents, agents and the event log.

Each method describes its request as a `Call` and hands it to the client's runner: the sync
client returns the result, the asyncio client an awaitable of it. Commands on an existing
stream send If-Match with the last version this client saw, unless `if_match` says otherwise
(an int: that version; None: no precondition). Reads wait for the client's own writes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar
from uuid import UUID

from chronicle_client.calls import LAST_SEEN, Call
from chronicle_client.models import (
    Agent, AgentPage, Chain, ChainPage, CommandResult, Document, DocumentPage, DocumentVersion, Event, EventPage,
    ExecutionPage,
)

Runner = Callable[[Call[Any]], Any]
M = TypeVar("M")


def _fields(**values: Any) -> dict[str, Any]:
    """A request body of the fields given (None: left out, so the server keeps or defaults it)."""
    return {k: (str(v) if isinstance(v, UUID) else v) for k, v in values.items() if v is not None}


class _Streams(Generic[M]):
    """What chains, documents and agents share: undo, redo, history, and their commands' shape."""

    kind = ""
    model: type[M]  # what `get` answers with

    def __init__(self, run: Runner) -> None:
        self._run = run

    def _command(self, method: str, path: str, stream_id: Any = None, json: Any = None, *,
                 if_match: Any = LAST_SEEN, params: dict[str, Any] | None = None,
                 idempotency_key: str | None = None) -> Any:
        sid = str(stream_id) if stream_id is not None else None
        return self._run(Call(method, f"/v1/{self.kind}{path}", CommandResult, json=json, params=params or {},
                              command=True, stream_id=sid, if_match=if_match if sid else None,
                              idempotency_key=idempotency_key))

    def _read(self, path: str, model: type, stream_id: Any = None, **params: Any) -> Any:
        return self._run(Call("GET", f"/v1/{self.kind}{path}", model, params=params, read_your_writes=True,
                              stream_id=str(stream_id) if stream_id is not None else None))

    def undo(self, stream_id: str | UUID, *, if_match: Any = LAST_SEEN) -> CommandResult:
        """Undo the latest change not yet undone: a new event, history stays."""
        return self._command("POST", f"/{stream_id}/undo", stream_id, if_match=if_match)

    def redo(self, stream_id: str | UUID, *, if_match: Any = LAST_SEEN) -> CommandResult:
        """Re-apply the latest undone change."""
        return self._command("POST", f"/{stream_id}/redo", stream_id, if_match=if_match)

    def history(self, stream_id: str | UUID, *, version: int | None = None, as_of: str | None = None) -> dict[str, Any]:
        """The stream's versions, or its state at a version or time (time travel)."""
        return self._read(f"/{stream_id}/history", dict, stream_id, version=version, as_of=as_of)

    def delete(self, stream_id: str | UUID, *, reason: str | None = None, if_match: Any = LAST_SEEN) -> CommandResult:
        """Delete it; its history stays (a document's versions stay readable and `restore` brings it back)."""
        return self._command("DELETE", f"/{stream_id}", stream_id, params={"reason": reason}, if_match=if_match)

    def get(self, stream_id: str | UUID) -> M:
        """It now, after this client's own writes (a document with its live tags, a chain with its canvas
        and live edges)."""
        return self._read(f"/{stream_id}", self.model, stream_id)


class Documents(_Streams[Document]):
    """Documents: versioned text or JSON, with tags."""

    kind = "documents"
    model = Document

    def create(self, namespace: str, type: str, title: str, *, content: str | None = None, body: Any = None,
               metadata: dict[str, Any] | None = None, document_id: str | UUID | None = None,
               idempotency_key: str | None = None) -> CommandResult:
        """Create a document (text `content` or a JSON `body`); its id is given or made."""
        return self._command("POST", "", json=_fields(namespace=namespace, type=type, title=title, content=content,
                                                      body=body, metadata=metadata, document_id=document_id),
                             idempotency_key=idempotency_key)

    def update(self, document_id: str | UUID, *, title: str | None = None, content: str | None = None,
               body: Any = None, metadata: dict[str, Any] | None = None, change_description: str | None = None,
               if_match: Any = LAST_SEEN, idempotency_key: str | None = None) -> CommandResult:
        """A new version with the fields given; the others stay."""
        return self._command("PATCH", f"/{document_id}", document_id, _fields(
            title=title, content=content, body=body, metadata=metadata, change_description=change_description),
            if_match=if_match, idempotency_key=idempotency_key)

    def restore(self, document_id: str | UUID, *, reason: str | None = None,
                if_match: Any = LAST_SEEN) -> CommandResult:
        """Bring a deleted document back as it was."""
        return self._command("POST", f"/{document_id}/restore", document_id, _fields(reason=reason),
                             if_match=if_match)

    def tag(self, document_id: str | UUID, tag: str, document_version: int, *,
            if_match: Any = LAST_SEEN) -> CommandResult:
        """Point a tag at a document version (moving it if it pointed elsewhere)."""
        return self._command("PUT", f"/{document_id}/tags/{tag}", document_id,
                             {"document_version": document_version}, if_match=if_match)

    def untag(self, document_id: str | UUID, tag: str, *, if_match: Any = LAST_SEEN) -> CommandResult:
        """Remove a tag."""
        return self._command("DELETE", f"/{document_id}/tags/{tag}", document_id, if_match=if_match)

    def version(self, document_id: str | UUID, document_version: int) -> DocumentVersion:
        """The document as it was at a content version, with its body."""
        return self._read(f"/{document_id}/versions/{document_version}", DocumentVersion)

    def list(self, *, namespace: Sequence[str] | None = None, type: Sequence[str] | None = None,
             tag: Sequence[str] | None = None, cursor: str | None = None, limit: int | None = None) -> DocumentPage:
        """Live documents, newest first, a page at a time."""
        return self._read("", DocumentPage, namespace=namespace, type=type, tag=tag, cursor=cursor, limit=limit)


class Agents(_Streams[Agent]):
    """Agents and their recorded executions."""

    kind = "agents"
    model = Agent

    def create(self, name: str, prompt: str, model: str, *, tools: list[Any] | None = None,
               metadata: dict[str, Any] | None = None, agent_id: str | UUID | None = None,
               idempotency_key: str | None = None) -> CommandResult:
        """Create an agent; its id is given or made."""
        return self._command("POST", "", json=_fields(name=name, prompt=prompt, model=model, tools=tools,
                                                      metadata=metadata, agent_id=agent_id),
                             idempotency_key=idempotency_key)

    def update(self, agent_id: str | UUID, *, name: str | None = None, prompt: str | None = None,
               model: str | None = None, tools: list[Any] | None = None, metadata: dict[str, Any] | None = None,
               if_match: Any = LAST_SEEN, idempotency_key: str | None = None) -> CommandResult:
        """Change the fields given."""
        return self._command("PATCH", f"/{agent_id}", agent_id, _fields(
            name=name, prompt=prompt, model=model, tools=tools, metadata=metadata),
            if_match=if_match, idempotency_key=idempotency_key)

    def record_execution(self, agent_id: str | UUID, *, duration_ms: int, tokens: int, input: Any = None,
                         output: Any = None, metadata: dict[str, Any] | None = None,
                         execution_id: str | None = None, if_match: Any = LAST_SEEN,
                         idempotency_key: str | None = None) -> CommandResult:
        """Record one execution of the agent; `execution_id` in the result."""
        return self._command("POST", f"/{agent_id}/executions", agent_id, _fields(
            execution_id=execution_id, input=input, output=output, duration_ms=duration_ms, tokens=tokens,
            metadata=metadata), if_match=if_match, idempotency_key=idempotency_key)

    def list(self, *, name: str | None = None, cursor: str | None = None, limit: int | None = None) -> AgentPage:
        """Live agents, most recently changed first."""
        return self._read("", AgentPage, name=name, cursor=cursor, limit=limit)

    def executions(self, agent_id: str | UUID, *, cursor: str | None = None,
                   limit: int | None = None) -> ExecutionPage:
        """The agent's executions, newest first."""
        return self._read(f"/{agent_id}/executions", ExecutionPage, cursor=cursor, limit=limit)


class Chains(_Streams[Chain]):
    """Chains: a canvas of document and agent nodes joined by edges."""

    kind = "chains"
    model = Chain

    def create(self, name: str, *, description: str | None = None, metadata: dict[str, Any] | None = None,
               chain_id: str | UUID | None = None, idempotency_key: str | None = None) -> CommandResult:
        """Create a chain; its id is given or made."""
        return self._command("POST", "", json=_fields(name=name, description=description, metadata=metadata,
                                                      chain_id=chain_id), idempotency_key=idempotency_key)

    def update(self, chain_id: str | UUID, *, name: str | None = None, description: str | None = None,
               metadata: dict[str, Any] | None = None, if_match: Any = LAST_SEEN) -> CommandResult:
        """Change the chain's name, description or metadata."""
        return self._command("PATCH", f"/{chain_id}", chain_id,
                             _fields(name=name, description=description, metadata=metadata), if_match=if_match)

    def put_canvas(self, chain_id: str | UUID, canvas_state: Any, *, viewport: dict[str, Any] | None = None,
                   if_match: Any = LAST_SEEN) -> CommandResult:
        """Replace the canvas state and viewport."""
        return self._command("PUT", f"/{chain_id}/canvas", chain_id,
                             _fields(canvas_state=canvas_state, viewport=viewport), if_match=if_match)

    def add_node(self, chain_id: str | UUID, node_id: str, kind: str, ref_id: str | UUID, *,
                 position: dict[str, Any] | None = None, if_match: Any = LAST_SEEN) -> CommandResult:
        """Put a document or agent (`kind`, `ref_id`) on the canvas."""
        return self._command("POST", f"/{chain_id}/nodes", chain_id,
                             _fields(node_id=node_id, kind=kind, ref_id=ref_id, position=position), if_match=if_match)

    def remove_node(self, chain_id: str | UUID, node_id: str, *, if_match: Any = LAST_SEEN) -> CommandResult:
        """Take a node off the canvas."""
        return self._command("DELETE", f"/{chain_id}/nodes/{node_id}", chain_id, if_match=if_match)

    def create_edge(self, chain_id: str | UUID, source_id: str, target_id: str, type: str, *,
                    edge_id: str | None = None, metadata: dict[str, Any] | None = None,
                    if_match: Any = LAST_SEEN) -> CommandResult:
        """Join two nodes; `edge_id` in the result."""
        return self._command("POST", f"/{chain_id}/edges", chain_id, _fields(
            edge_id=edge_id, source_id=source_id, target_id=target_id, type=type, metadata=metadata),
            if_match=if_match)

    def update_edge(self, chain_id: str | UUID, edge_id: str, *, type: str | None = None,
                    metadata: dict[str, Any] | None = None, if_match: Any = LAST_SEEN) -> CommandResult:
        """Change an edge's type or metadata."""
        return self._command("PATCH", f"/{chain_id}/edges/{edge_id}", chain_id,
                             _fields(type=type, metadata=metadata), if_match=if_match)

    def delete_edge(self, chain_id: str | UUID, edge_id: str, *, if_match: Any = LAST_SEEN) -> CommandResult:
        """Delete an edge."""
        return self._command("DELETE", f"/{chain_id}/edges/{edge_id}", chain_id, if_match=if_match)

    def list(self, *, name: str | None = None, cursor: str | None = None, limit: int | None = None) -> ChainPage:
        """Live chains, most recently changed first (without edges)."""
        return self._read("", ChainPage, name=name, cursor=cursor, limit=limit)


class Events:
    """The event log (an auditor's or admin's key): pages of it, and one event."""

    def __init__(self, run: Runner) -> None:
        self._run = run

    def list(self, *, type: Sequence[str] | None = None, stream: str | None = None,
             stream_type: Sequence[str] | None = None, actor: str | None = None, session: str | None = None,
             cursor: str | None = None, limit: int | None = None) -> EventPage:
        """Events in log order, filtered as GET /v1/events documents; `next_cursor` pages on."""
        return self._run(Call("GET", "/v1/events", EventPage, params={
            "type": type, "stream": stream, "stream_type": stream_type, "actor": actor, "session": session,
            "cursor": cursor, "limit": limit}))

    def get(self, event_id: str | UUID) -> Event:
        """One event by its id."""
        return self._run(Call("GET", f"/v1/events/{event_id}", Event))
