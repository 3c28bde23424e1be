"""The Chain aggregate: a canvas of document and agent nodes joined by edges.

An edge joins two nodes of its own chain, never a node to itself, and never dangles:
removing a node first deletes every edge touching it.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal
from uuid import UUID

from domain.aggregate import (
    Change, Deleted, Redone, Undone, Updated, WorkspaceAggregate, WorkspaceCreated, WorkspaceEvent,
)
from domain.bounds import (
    CanvasState, Description, EdgeMetadata, Identifier, Metadata, Name, NodePosition, Reason, Viewport,
)
from domain.commands import ChainChanges
from domain.errors import DomainError
from domain.event_types import registry
from domain.rules import (
    ELEMENT_ID,
    MAX_CANVAS_BYTES,
    MAX_DESCRIPTION_CHARS,
    MAX_EDGE_METADATA_BYTES,
    MAX_EDGES,
    MAX_METADATA_BYTES,
    MAX_NODES,
    MAX_POSITION_BYTES,
    MAX_REASON_CHARS,
    MAX_VIEWPORT_BYTES,
    NODE_KINDS,
    check_identifier,
    check_name,
    check_object,
    check_stream_id,
    check_text,
)

# The reason an edge deletion carries when a node removal deletes it; users may not send it.
NODE_REMOVED = "node_removed"


@registry.register("chain.created", stream_type="chain")
class ChainCreated(WorkspaceCreated):
    originator_topic: ClassVar[str] = "domain.chain:Chain"
    name: Name
    description: Description
    metadata: Metadata


@registry.register("chain.updated", stream_type="chain")
class ChainUpdated(ChainChanges, Updated):
    pass


@registry.register("chain.canvas_updated", stream_type="chain")
class ChainCanvasUpdated(Updated):
    canvas_state: CanvasState
    viewport: Viewport


@registry.register("chain.node_added", stream_type="chain")
class ChainNodeAdded(Change):
    node_id: Identifier
    kind: Literal["document", "agent"]
    ref_id: Identifier
    position: NodePosition

    def change(self, aggregate: Chain) -> None:
        aggregate.nodes[self.node_id] = self.values("kind", "ref_id", "position")


@registry.register("chain.node_removed", stream_type="chain")
class ChainNodeRemoved(Change):
    node_id: Identifier

    def change(self, aggregate: Chain) -> None:
        aggregate.nodes.pop(self.node_id, None)


@registry.register("chain.deleted", stream_type="chain")
class ChainDeleted(Deleted):
    pass


@registry.register("edge.created", stream_type="chain")
class EdgeCreated(Change):
    edge_id: Identifier
    source_id: Identifier
    target_id: Identifier
    type: Identifier
    metadata: EdgeMetadata

    def change(self, aggregate: Chain) -> None:
        aggregate.edges[self.edge_id] = self.values("source_id", "target_id", "type", "metadata")


@registry.register("edge.updated", stream_type="chain")
class EdgeUpdated(Change):
    edge_id: Identifier
    type: Identifier | None = None
    metadata: EdgeMetadata | None = None

    def change(self, aggregate: Chain) -> None:
        self.assign(aggregate.edges[self.edge_id], "type", "metadata", given_only=True)


@registry.register("edge.deleted", stream_type="chain")
class EdgeDeleted(WorkspaceEvent):
    edge_id: Identifier
    reason: Reason | None = None

    def apply(self, aggregate: Chain) -> None:
        aggregate.edges.pop(self.edge_id, None)
        if self.reason == NODE_REMOVED:
            # Part of a node removal: undone together with the node_removed that follows.
            aggregate.begin_group(self.originator_version)
        else:
            aggregate.record_change(self.originator_version)


@registry.register("chain.undone", stream_type="chain")
class ChainUndone(Undone):
    pass


@registry.register("chain.redone", stream_type="chain")
class ChainRedone(Redone):
    pass


class Chain(WorkspaceAggregate):
    """A chain: name, description, metadata, canvas state and viewport, nodes and edges.

    Command methods check the rules and trigger events; events' `apply` changes the state.
    """

    stream_type: ClassVar[str] = "chain"
    deleted_event = ChainDeleted
    undone_event = ChainUndone
    redone_event = ChainRedone
    state_fields = ("name", "description", "metadata", "canvas_state", "viewport", "nodes", "edges", "deleted")

    def __init__(self) -> None:
        super().__init__()
        self.name = ""
        self.description = ""
        self.metadata: dict[str, Any] = {}
        self.canvas_state: dict[str, Any] = {}
        self.viewport: dict[str, Any] = {}
        self.nodes: dict[str, dict[str, Any]] = {}
        self.edges: dict[str, dict[str, Any]] = {}

    @classmethod
    def create(
        cls, chain_id: UUID, name: str, description: str = "", metadata: dict[str, Any] | None = None
    ) -> Chain:
        """A new chain, its chain.created event pending.

        Raises DomainError if the name, description or metadata break a rule.
        """
        metadata = {} if metadata is None else metadata
        check_name(name, "name")
        check_text(description, "description", max_bytes=MAX_DESCRIPTION_CHARS)
        check_object(metadata, "metadata", max_bytes=MAX_METADATA_BYTES)
        return cls._create(ChainCreated, id=chain_id, name=name, description=description, metadata=metadata)

    # -- commands ----------------------------------------------------------------------------

    def update(
        self, name: str | None = None, description: str | None = None, metadata: dict[str, Any] | None = None
    ) -> None:
        """Change the name, description or metadata; only changed fields go in the event.

        Nothing changed: no event.
        """
        self.check_not_deleted()
        changes: dict[str, Any] = {}
        if name is not None and check_name(name, "name") != self.name:
            changes["name"] = name
        if description is not None and (
            check_text(description, "description", max_bytes=MAX_DESCRIPTION_CHARS) != self.description
        ):
            changes["description"] = description
        if metadata is not None and check_object(metadata, "metadata", max_bytes=MAX_METADATA_BYTES) != self.metadata:
            changes["metadata"] = metadata
        if changes:
            self.trigger_event(ChainUpdated, **changes)

    def update_canvas(self, canvas_state: dict[str, Any], viewport: dict[str, Any]) -> None:
        """Replace the canvas state and viewport.

        Nothing changed: no event.
        """
        self.check_not_deleted()
        check_object(canvas_state, "canvas_state", max_bytes=MAX_CANVAS_BYTES)
        check_object(viewport, "viewport", max_bytes=MAX_VIEWPORT_BYTES)
        if canvas_state != self.canvas_state or viewport != self.viewport:
            self.trigger_event(ChainCanvasUpdated, canvas_state=canvas_state, viewport=viewport)

    def add_node(self, node_id: str, kind: str, ref_id: str, position: dict[str, Any] | None = None) -> None:
        """Put a document or agent on the canvas as a node that edges can join.

        Raises duplicate_id, invalid_identifier, invalid_node_kind, too_many.
        """
        position = {} if position is None else position
        self.check_not_deleted()
        check_identifier(node_id, "node_id", ELEMENT_ID)
        if node_id in self.nodes:
            raise DomainError("duplicate_id", f"chain already has a node {node_id!r}", field="node_id")
        if kind not in NODE_KINDS:
            raise DomainError("invalid_node_kind", f"node kind must be one of {NODE_KINDS}", field="kind")
        check_stream_id(ref_id, "ref_id")
        check_object(position, "position", max_bytes=MAX_POSITION_BYTES)
        if len(self.nodes) >= MAX_NODES:
            raise DomainError("too_many", f"a chain holds at most {MAX_NODES} nodes", field="node_id")
        self.trigger_event(ChainNodeAdded, node_id=node_id, kind=kind, ref_id=ref_id, position=position)

    def remove_node(self, node_id: str) -> None:
        """Take a node off the canvas, first deleting every edge that touches it.

        Raises node_not_found.
        """
        self.check_not_deleted()
        self.check_node(node_id, "node_id")
        for edge_id in sorted(self.edges):
            edge = self.edges[edge_id]
            if node_id in (edge["source_id"], edge["target_id"]):
                self.trigger_event(EdgeDeleted, edge_id=edge_id, reason=NODE_REMOVED)
        self.trigger_event(ChainNodeRemoved, node_id=node_id)

    def create_edge(
        self, edge_id: str, source_id: str, target_id: str, type: str, metadata: dict[str, Any] | None = None
    ) -> None:
        """Join two different nodes of this chain.

        Raises duplicate_id, self_edge, node_not_found, duplicate_edge, invalid_identifier, too_many.
        """
        metadata = {} if metadata is None else metadata
        self.check_not_deleted()
        check_identifier(edge_id, "edge_id", ELEMENT_ID)
        if edge_id in self.edges:
            raise DomainError("duplicate_id", f"chain already has an edge {edge_id!r}", field="edge_id")
        if source_id == target_id:
            raise DomainError("self_edge", "an edge cannot join a node to itself", field="target_id")
        self.check_node(source_id, "source_id")
        self.check_node(target_id, "target_id")
        check_identifier(type, "type")
        check_object(metadata, "metadata", max_bytes=MAX_EDGE_METADATA_BYTES)
        for other in self.edges.values():
            if (other["source_id"], other["target_id"], other["type"]) == (source_id, target_id, type):
                raise DomainError(
                    "duplicate_edge", f"an edge of type {type!r} already joins these nodes", field="edge_id"
                )
        if len(self.edges) >= MAX_EDGES:
            raise DomainError("too_many", f"a chain holds at most {MAX_EDGES} edges", field="edge_id")
        self.trigger_event(
            EdgeCreated, edge_id=edge_id, source_id=source_id, target_id=target_id, type=type, metadata=metadata
        )

    def update_edge(self, edge_id: str, type: str | None = None, metadata: dict[str, Any] | None = None) -> None:
        """Change an edge's type or metadata; only changed fields go in the event.

        Raises edge_not_found; nothing changed: no event.
        """
        self.check_not_deleted()
        edge = self.check_edge(edge_id)
        changes: dict[str, Any] = {}
        if type is not None and check_identifier(type, "type") != edge["type"]:
            changes["type"] = type
        if metadata is not None and (
            check_object(metadata, "metadata", max_bytes=MAX_EDGE_METADATA_BYTES) != edge["metadata"]
        ):
            changes["metadata"] = metadata
        if changes:
            self.trigger_event(EdgeUpdated, edge_id=edge_id, **changes)

    def delete_edge(self, edge_id: str, reason: str | None = None) -> None:
        """Remove an edge.

        Raises edge_not_found.
        """
        self.check_not_deleted()
        self.check_edge(edge_id)
        check_text(reason, "reason", max_bytes=MAX_REASON_CHARS, allow_none=True)
        if reason == NODE_REMOVED:
            raise DomainError("invalid_text", f"reason {NODE_REMOVED!r} is reserved", field="reason")
        self.trigger_event(EdgeDeleted, edge_id=edge_id, reason=reason)

    # -- rules -------------------------------------------------------------------------------

    def check_node(self, node_id: str, field: str) -> dict[str, Any]:
        """The node `node_id` of this chain.

        Raises node_not_found: edge endpoints must exist in the same chain.
        """
        try:
            return self.nodes[node_id]
        except (KeyError, TypeError):
            raise DomainError(
                "node_not_found", f"chain {self.id} has no node {str(node_id)[:80]!r}", field=field
            ) from None

    def check_edge(self, edge_id: str) -> dict[str, Any]:
        """The edge `edge_id` of this chain.

        Raises edge_not_found.
        """
        try:
            return self.edges[edge_id]
        except (KeyError, TypeError):
            raise DomainError(
                "edge_not_found", f"chain {self.id} has no edge {str(edge_id)[:80]!r}", field="edge_id"
            ) from None

