"""Which aggregate method each command calls: two tables keyed by command class.

`CREATIONS` makes a new aggregate from a create command; `DECISIONS` calls the loaded
aggregate's command method, whose events stay pending. Adding a command is one row here.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any, Protocol
from uuid import UUID

from domain import commands as c
from domain.agent import Agent
from domain.aggregate import WorkspaceAggregate
from domain.chain import Chain
from domain.document import Document
from domain.errors import DomainError



class Lookups(Protocol):
    """What a decision may ask of the world beyond its aggregate; the application service answers.

    The domain names the questions, so that it needs no I/O of its own.
    """

    def state_of_version(self, stream_id: UUID, version: int) -> dict[str, Any]:
        """A stream's state as it was at an earlier version (for undo and redo)."""
        ...

    def check_node_ref(self, kind: str, ref_id: str) -> None:
        """Raise a DomainError unless the document or agent a node refers to exists."""
        ...


# (lookups, command, aggregate) -> None: the aggregate's events stay pending.
Decision = Callable[[Lookups, Any, Any], None]
# (command, stream id) -> the new aggregate with its creation event pending.
Creation = Callable[[Any, UUID], WorkspaceAggregate]

CREATIONS: dict[type[c.Command], tuple[str, Creation]] = {
    c.CreateChain: ("chain_id", lambda cmd, stream_id: Chain.create(
        stream_id, cmd.name, cmd.description, cmd.metadata)),
    c.CreateDocument: ("document_id", lambda cmd, stream_id: Document.create(
        stream_id, cmd.namespace, cmd.document_type, cmd.title,
        content=cmd.content, body=cmd.body, metadata=cmd.metadata)),
    c.CreateAgent: ("agent_id", lambda cmd, stream_id: Agent.create(
        stream_id, cmd.name, cmd.prompt, cmd.model, cmd.tools, cmd.metadata)),
}


def _earlier_state(ws: Lookups, aggregate: WorkspaceAggregate) -> Callable[[int], dict[str, Any]]:
    return lambda version: ws.state_of_version(aggregate.id, version)


def _add_node(ws: Lookups, cmd: c.AddNode, aggregate: Chain) -> None:
    ws.check_node_ref(cmd.kind, cmd.ref_id)
    aggregate.add_node(cmd.node_id, cmd.kind, cmd.ref_id, cmd.position)


DECISIONS: dict[type[c.Command], Decision] = {
    # chains
    c.UpdateChain: lambda ws, cmd, agg: agg.update(name=cmd.name, description=cmd.description, metadata=cmd.metadata),
    c.UpdateCanvas: lambda ws, cmd, agg: agg.update_canvas(cmd.canvas_state, cmd.viewport),
    c.AddNode: _add_node,
    c.RemoveNode: lambda ws, cmd, agg: agg.remove_node(cmd.node_id),
    c.DeleteChain: lambda ws, cmd, agg: agg.delete(cmd.reason),
    c.CreateEdge: lambda ws, cmd, agg: agg.create_edge(cmd.edge_id, cmd.source_id, cmd.target_id, cmd.type,
                                                       cmd.metadata),
    c.UpdateEdge: lambda ws, cmd, agg: agg.update_edge(cmd.edge_id, type=cmd.type, metadata=cmd.metadata),
    c.DeleteEdge: lambda ws, cmd, agg: agg.delete_edge(cmd.edge_id, cmd.reason),
    # documents
    c.UpdateDocument: lambda ws, cmd, agg: agg.update(
        title=cmd.title, content=cmd.content, body=cmd.body, metadata=cmd.metadata,
        change_description=cmd.change_description),
    c.DeleteDocument: lambda ws, cmd, agg: agg.delete(cmd.reason),
    c.RestoreDocument: lambda ws, cmd, agg: agg.restore(cmd.reason),
    c.TagDocument: lambda ws, cmd, agg: agg.tag(cmd.tag, cmd.version),
    c.UntagDocument: lambda ws, cmd, agg: agg.untag(cmd.tag),
    # agents
    c.UpdateAgent: lambda ws, cmd, agg: agg.update(
        name=cmd.name, prompt=cmd.prompt, model=cmd.model, tools=cmd.tools, metadata=cmd.metadata),
    c.DeleteAgent: lambda ws, cmd, agg: agg.delete(cmd.reason),
    c.RecordExecution: lambda ws, cmd, agg: agg.record_execution(
        cmd.execution_id, cmd.input, cmd.output, cmd.duration_ms, cmd.tokens, cmd.metadata),
    # any stream
    c.Undo: lambda ws, cmd, agg: agg.undo(_earlier_state(ws, agg)),
    c.Redo: lambda ws, cmd, agg: agg.redo(_earlier_state(ws, agg)),
}


def _row_of(table: dict[type[c.Command], Any], command: c.Command) -> Any:
    """The table's row for the command's class or its nearest base (as `match` on a class would)."""
    for cls in type(command).__mro__:
        if cls in table:
            return table[cls]
    raise DomainError("unknown_command", f"no handler for {type(command).__name__}", field="command")


def is_creation(command: c.Command) -> bool:
    """Whether the command creates a stream (it names no existing aggregate to load)."""
    return any(cls in CREATIONS for cls in type(command).__mro__)


def create(command: c.Command, new_id: Callable[[c.Command], UUID]) -> WorkspaceAggregate:
    """The new aggregate of a create command; its id is the command's, else `new_id(command)`."""
    field, creation = _row_of(CREATIONS, command)
    return creation(command, getattr(command, field) or new_id(command))


def decide(workspace: Lookups, command: c.Command, aggregate: WorkspaceAggregate) -> None:
    """Call the aggregate's command method for `command`; its events stay pending.

    Raises DomainError unknown_command for a command class with no row.
    """
    _row_of(DECISIONS, command)(workspace, command, aggregate)


def stream_id_of(command: Any) -> UUID:
    """The id of the stream a command changes. Raises DomainError unknown_command."""
    field = _stream_field(type(command))
    if field is None:
        raise DomainError("unknown_command", f"{type(command).__name__} names no stream", field="command")
    return getattr(command, field)


def stream_field_of(command: Any) -> str:
    """The name of the command's field that holds its stream id."""
    return _stream_field(type(command)) or "stream_id"


def aggregate_class_of(command: Any) -> type[WorkspaceAggregate]:
    """The aggregate class a command is decided by."""
    return _aggregate_class(type(command))


@cache
def _stream_field(command_class: type) -> str | None:
    """The field of a command class that names its stream, if any: looked up once per class."""
    fields = command_class.model_fields
    return next((f for f in ("chain_id", "document_id", "agent_id", "stream_id") if f in fields), None)


@cache
def _aggregate_class(command_class: type) -> type[WorkspaceAggregate]:
    """The aggregate class of a command class, by the stream id field it has: looked up once per class."""
    fields = command_class.model_fields
    for field, aggregate_class in (("chain_id", Chain), ("document_id", Document), ("agent_id", Agent)):
        if field in fields:
            return aggregate_class
    return WorkspaceAggregate
