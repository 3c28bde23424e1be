"""The aggregates on their own (no persistence): snapshots, bounded undo, events as data."""

from __future__ import annotations

import uuid

import pytest

from domain.aggregate import WorkspaceSnapshot
from domain.chain import Chain
from domain.document import Document
from domain.errors import DomainError
from domain.event_types import registry
from domain.rules import UNDO_DEPTH
from service_layer.workspace import Workspace
from domain import commands as c


def test_a_snapshot_round_trips_the_whole_aggregate_as_json() -> None:
    chain = Chain.create(uuid.uuid4(), "C", metadata={"team": "a"})
    chain.add_node("a", "document", str(uuid.uuid4()), {"x": 1})
    chain.add_node("b", "agent", str(uuid.uuid4()))
    chain.create_edge("e", "a", "b", "flows")
    snapshot = WorkspaceSnapshot.take(chain)
    stored = WorkspaceSnapshot.model_validate(snapshot.model_dump(mode="json"))
    restored = stored.mutate(None)
    assert vars(restored) == vars(chain) | {"_pending_events": []}


def test_every_event_is_registered_under_its_contract_name() -> None:
    chain = Chain.create(uuid.uuid4(), "C")
    chain.add_node("a", "document", str(uuid.uuid4()))
    chain.add_node("b", "document", str(uuid.uuid4()))
    chain.create_edge("e", "a", "b", "flows")
    chain.remove_node("a")
    names = [registry.name_of(type(event)) for event in chain.collect_events()]
    assert names == ["chain.created", "chain.node_added", "chain.node_added", "edge.created", "edge.deleted",
                     "chain.node_removed"]
    assert registry.get("edge.created").stream_type == "chain"


def test_undo_reaches_back_a_bounded_number_of_changes() -> None:
    ws = Workspace(env={"PERSISTENCE_MODULE": "eventsourcing.popo"}, snapshot_interval=50)
    doc = ws.handle(c.CreateDocument(namespace="ns", document_type="t", title="T", content="0")).stream_id
    for n in range(1, UNDO_DEPTH + 6):
        ws.handle(c.UpdateDocument(document_id=doc, content=str(n)))
    for _ in range(UNDO_DEPTH):
        ws.handle(c.Undo(stream_id=doc))
    assert ws.get(doc).state["content"] == "5"
    with pytest.raises(DomainError) as caught:
        ws.handle(c.Undo(stream_id=doc))
    assert caught.value.code == "nothing_to_undo"
    for _ in range(UNDO_DEPTH):
        ws.handle(c.Redo(stream_id=doc))
    assert ws.get(doc).state["content"] == str(UNDO_DEPTH + 5)


def test_a_document_update_numbers_its_version_after_the_highest_ever() -> None:
    doc = Document.create(uuid.uuid4(), "ns", "t", "T", content="a")
    doc.update(content="b")
    doc.set_state(doc.state() | {"version": 1})  # as an undo would
    doc.update(content="c")
    assert doc.state()["version"] == 3
