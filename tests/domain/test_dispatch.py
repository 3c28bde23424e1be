"""Commands reach their aggregate method through domain.decisions' tables; snapshots never fail a command."""

from __future__ import annotations

import logging
import uuid

import pytest

from domain import commands as c
from domain.decisions import CREATIONS, DECISIONS
from domain.errors import DomainError
from service_layer.workspace import Workspace


# The bases commands share (a command on an existing stream, chain, edge, document, agent): no rows of their own.
BASES = (c.Command, c.StreamCommand, c.ChainCommand, c.EdgeCommand, c.DocumentCommand, c.AgentCommand)


def _command_classes() -> list[type[c.Command]]:
    return [v for v in vars(c).values() if isinstance(v, type) and issubclass(v, c.Command) and v not in BASES]


def test_every_command_class_has_exactly_one_row() -> None:
    classes = _command_classes()
    assert len(classes) == 21
    for cls in classes:
        assert (cls in DECISIONS) != (cls in CREATIONS), cls.__name__
    assert set(DECISIONS) | set(CREATIONS) == set(classes)


def test_a_command_class_without_a_row_is_unknown() -> None:
    class Rename(c.StreamCommand):
        stream_id: uuid.UUID

    ws = Workspace(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    doc = ws.handle(c.CreateDocument(namespace="n", document_type="t", title="a", content="x")).stream_id
    with pytest.raises(DomainError) as caught:
        ws.handle(Rename(stream_id=uuid.UUID(doc)))
    assert (caught.value.code, caught.value.field) == ("unknown_command", "command")


def test_a_failed_snapshot_does_not_fail_the_command(monkeypatch, caplog) -> None:
    ws = Workspace(env={"PERSISTENCE_MODULE": "eventsourcing.popo"}, snapshot_interval=2)
    doc = ws.handle(c.CreateDocument(namespace="n", document_type="t", title="a", content="x")).stream_id

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("snapshot store down")

    monkeypatch.setattr(ws, "take_snapshot", broken)
    with caplog.at_level(logging.ERROR, logger="service_layer.workspace"):
        result = ws.handle(c.UpdateDocument(document_id=doc, content="y"))
    assert (result.version, result.appended) == (2, 1)
    assert "taking a snapshot failed" in caplog.text
    assert ws.get(doc).state["content"] == "y"
    monkeypatch.undo()
    ws.handle(c.UpdateDocument(document_id=doc, content="z"))
    ws.handle(c.UpdateDocument(document_id=doc, content="w"))
    assert [s.originator_version for s in ws.snapshots.get(uuid.UUID(doc))] == [4]
