"""Copies of aggregates share nothing mutable with the original (what the aggregate cache hands out)."""

from __future__ import annotations

import copy
import uuid
from typing import Any
from uuid import UUID

import pytest
from hypothesis import HealthCheck, given, settings

from domain.chain import Chain
from domain.copies import copy_value
from domain.errors import DomainError
from service_layer.workspace import Workspace
from tests.domain.test_laws import command_for, create, ops


def _containers(value: Any) -> list[Any]:
    """Every dict and list inside `value`, itself included."""
    if isinstance(value, dict):
        return [value, *(c for item in value.values() for c in _containers(item))]
    if isinstance(value, list):
        return [value, *(c for item in value for c in _containers(item))]
    return []


def test_a_copied_aggregate_shares_no_dict_or_list_and_changes_alone() -> None:
    chain = Chain.create(uuid.uuid4(), "C", metadata={"team": {"names": ["a", "b"]}})
    chain.add_node("a", "document", str(uuid.uuid4()), {"x": 1, "tags": [{"k": "v"}]})
    chain.add_node("b", "agent", str(uuid.uuid4()))
    chain.collect_events()
    copied = copy.deepcopy(chain)
    assert copied.state() == chain.state() and copied.version == chain.version
    # The undo and redo stacks are new lists of the same [version, version] pairs (never changed in place).
    assert copied.undo_stack == chain.undo_stack and copied.undo_stack is not chain.undo_stack
    fields = [name for name in vars(chain) if name not in ("undo_stack", "redo_stack")]
    originals = {id(c) for name in fields for c in _containers(vars(chain)[name])}
    assert not originals & {id(c) for name in fields for c in _containers(vars(copied)[name])}
    copied.nodes["a"]["position"]["tags"][0]["k"] = "changed"
    copied.metadata["team"]["names"].append("c")
    assert chain.nodes["a"]["position"]["tags"][0]["k"] == "v"
    assert chain.metadata["team"]["names"] == ["a", "b"]


def test_copy_value_shares_immutable_values_and_deep_copies_anything_else() -> None:
    stamp, ident, pair = object(), uuid.uuid4(), ({"a": 1}, [2])
    value = {"id": ident, "text": "t", "n": 1.5, "nested": [{"x": None}], "other": pair, "thing": stamp}
    copied = copy_value(value)
    assert copied == {**value, "thing": copied["thing"]}
    assert copied["id"] is ident and copied["text"] is value["text"]
    assert copied["nested"] is not value["nested"] and copied["nested"][0] is not value["nested"][0]
    assert copied["other"] == pair and copied["other"][0] is not pair[0]  # a tuple: copy.deepcopy


@pytest.mark.parametrize("kind", ["chain", "document", "agent"])
def test_copy_value_is_a_deepcopy_of_every_aggregates_state_after_a_random_history(kind: str) -> None:
    """copy_value copies a dict or list met twice twice, and never ends on a cycle: it equals
    copy.deepcopy only because no aggregate's state holds either. This pins that for each type."""

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(sequence=ops[kind])
    def history(sequence: list[tuple[Any, ...]]) -> None:
        ws = Workspace(env={"PERSISTENCE_MODULE": "eventsourcing.popo"}, snapshot_interval=3)
        refs = {"document": create(ws, "document"), "agent": create(ws, "agent")}
        stream_id = create(ws, kind)
        for step, op in enumerate(sequence):
            try:
                ws.handle(command_for(kind, op, stream_id, refs, step))
            except DomainError:
                pass
        state = vars(ws.repository.get(UUID(stream_id)))
        containers = [id(c) for value in state.values() for c in _containers(value)]
        assert len(containers) == len(set(containers)), "a dict or list appears twice"
        assert copy_value(state) == copy.deepcopy(state)

    history()
