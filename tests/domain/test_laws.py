"""Hypothesis laws over random command sequences with undo and redo mixed in.

For every stream kind: undo returns the state before the undone change, undo then redo is
the identity, a new change clears redo, a refused command appends nothing, replay from
nothing gives the live state, and state at any version via snapshots equals the replay of
the first v events. A model of the undo/redo stacks (states, not versions) is the oracle.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from domain import commands as c
from domain.errors import DomainError
from service_layer.workspace import Workspace

PG = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MEMORY = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

NODES = ["n1", "n2", "n3"]
EDGES = ["e1", "e2", "e3"]

add_node = st.tuples(st.just("add_node"), st.sampled_from(NODES), st.sampled_from(["document", "agent"]))
create_edge = st.tuples(
    st.just("create_edge"), st.sampled_from(EDGES), st.sampled_from(NODES), st.sampled_from(NODES)
)
undo, redo = st.tuples(st.just("undo")), st.tuples(st.just("redo"))
# Branches are picked evenly, so repeating one makes it likelier (deletes are rarer, undo commoner).
chain_op = st.one_of(
    st.tuples(st.just("update"), st.sampled_from(["alpha", "beta"]), st.sampled_from([None, "d1", "d2"])),
    st.tuples(st.just("canvas"), st.integers(1, 3)),
    add_node, add_node, add_node,
    st.tuples(st.just("remove_node"), st.sampled_from(NODES)),
    create_edge, create_edge, create_edge,
    st.tuples(st.just("update_edge"), st.sampled_from(EDGES), st.sampled_from(["flows", "feeds"])),
    st.tuples(st.just("delete_edge"), st.sampled_from(EDGES)),
    st.tuples(st.just("delete")),
    undo, undo, redo, redo,
)
document_op = st.one_of(
    st.tuples(st.just("update"), st.sampled_from([None, "t1", "t2"]), st.sampled_from([None, "c1", "c2", "c3"])),
    st.tuples(st.just("update"), st.sampled_from([None, "t1", "t2"]), st.sampled_from([None, "c1", "c2", "c3"])),
    st.tuples(st.just("metadata"), st.integers(1, 2)),
    st.tuples(st.just("tag"), st.sampled_from(["production", "staging"]), st.integers(1, 6)),
    st.tuples(st.just("tag"), st.sampled_from(["production", "staging"]), st.integers(1, 3)),
    st.tuples(st.just("untag"), st.sampled_from(["production", "staging"])),
    st.tuples(st.just("delete")),
    st.tuples(st.just("restore")),
    undo, undo, redo, redo,
)
agent_op = st.one_of(
    st.tuples(st.just("update"), st.sampled_from([None, "a1", "a2"]), st.sampled_from([None, "gpt-4o", "claude"])),
    st.tuples(st.just("tools"), st.sampled_from([[], ["search"], ["search", {"name": "calc"}]])),
    st.tuples(st.just("update"), st.sampled_from([None, "a1", "a2"]), st.sampled_from([None, "gpt-4o", "claude"])),
    st.tuples(st.just("execute"), st.integers(0, 50)),
    st.tuples(st.just("delete")),
    undo, undo, redo, redo,
)
# Each stream starts from a prefix that gives the random ops something to work on.
PREFIX: dict[str, list[tuple[Any, ...]]] = {
    "chain": [("add_node", "n1", "document"), ("add_node", "n2", "agent"), ("add_node", "n3", "document"),
              ("create_edge", "e1", "n1", "n2"), ("create_edge", "e2", "n2", "n3")],
    "document": [("update", None, "c1"), ("tag", "production", 2)],
    "agent": [],
}
# Bursts of undos then redos, so that deep undo/redo runs happen often.
burst = st.tuples(st.integers(1, 4), st.integers(0, 4)).map(lambda n: [("undo",)] * n[0] + [("redo",)] * n[1])


def sequences(kind: str, op: st.SearchStrategy[tuple[Any, ...]]) -> st.SearchStrategy[list[tuple[Any, ...]]]:
    chunks = st.lists(st.one_of(op.map(lambda o: [o]), burst), max_size=14)
    return chunks.map(lambda cs: PREFIX[kind] + [o for chunk in cs for o in chunk])


ops = {"chain": sequences("chain", chain_op), "document": sequences("document", document_op),
       "agent": sequences("agent", agent_op)}


def create(ws: Workspace, kind: str) -> str:
    if kind == "chain":
        return ws.handle(c.CreateChain(name="chain")).stream_id
    if kind == "document":
        return ws.handle(
            c.CreateDocument(namespace="ns", document_type="session_context", title="doc", content="c0")
        ).stream_id
    return ws.handle(c.CreateAgent(name="agent", prompt="be brief", model="gpt-4o")).stream_id


def command_for(kind: str, op: tuple[Any, ...], stream_id: str, refs: dict[str, str], step: int) -> c.Command:
    name = op[0]
    if name == "undo":
        return c.Undo(stream_id=stream_id)
    if name == "redo":
        return c.Redo(stream_id=stream_id)
    if kind == "chain":
        match op:
            case ("update", new_name, description):
                return c.UpdateChain(chain_id=stream_id, name=new_name, description=description)
            case ("canvas", zoom):
                return c.UpdateCanvas(chain_id=stream_id, canvas_state={"zoom": zoom}, viewport={"x": zoom})
            case ("add_node", node_id, node_kind):
                return c.AddNode(chain_id=stream_id, node_id=node_id, kind=node_kind, ref_id=refs[node_kind],
                                 position={"x": step})
            case ("remove_node", node_id):
                return c.RemoveNode(chain_id=stream_id, node_id=node_id)
            case ("create_edge", edge_id, source, target):
                return c.CreateEdge(chain_id=stream_id, edge_id=edge_id, source_id=source, target_id=target,
                                    type="flows")
            case ("update_edge", edge_id, edge_type):
                return c.UpdateEdge(chain_id=stream_id, edge_id=edge_id, type=edge_type)
            case ("delete_edge", edge_id):
                return c.DeleteEdge(chain_id=stream_id, edge_id=edge_id)
            case ("delete",):
                return c.DeleteChain(chain_id=stream_id, reason="done")
    if kind == "document":
        match op:
            case ("update", title, content):
                return c.UpdateDocument(document_id=stream_id, title=title, content=content,
                                        change_description=f"step {step}")
            case ("metadata", n):
                return c.UpdateDocument(document_id=stream_id, metadata={"n": n})
            case ("tag", tag, version):
                return c.TagDocument(document_id=stream_id, tag=tag, version=version)
            case ("untag", tag):
                return c.UntagDocument(document_id=stream_id, tag=tag)
            case ("delete",):
                return c.DeleteDocument(document_id=stream_id)
            case ("restore",):
                return c.RestoreDocument(document_id=stream_id)
    match op:
        case ("update", new_name, model):
            return c.UpdateAgent(agent_id=stream_id, name=new_name, model=model)
        case ("tools", tools):
            return c.UpdateAgent(agent_id=stream_id, tools=tools)
        case ("execute", tokens):
            return c.RecordExecution(agent_id=stream_id, execution_id=f"x{step}", input="hi", output="ho",
                                     duration_ms=5, tokens=tokens)
        case ("delete",):
            return c.DeleteAgent(agent_id=stream_id)
    raise AssertionError(op)


def check_invariants(ws: Workspace, stream_id: str) -> None:
    aggregate = ws.repository.get(UUID(stream_id))
    state = aggregate.state()
    if aggregate.stream_type == "chain":
        for edge in state["edges"].values():
            assert edge["source_id"] != edge["target_id"]
            assert edge["source_id"] in state["nodes"] and edge["target_id"] in state["nodes"]
    if aggregate.stream_type == "document":
        assert 1 <= state["version"] <= aggregate.highest_version
        assert all(1 <= v <= aggregate.highest_version for v in state["tags"].values())


def run_laws(ws: Workspace, kind: str, sequence: list[tuple[Any, ...]], refs: dict[str, str]) -> None:
    stream_id = create(ws, kind)
    undo_model: list[dict[str, Any]] = []  # states before each change not yet undone
    redo_model: list[dict[str, Any]] = []  # states before each undo not yet redone
    states = {1: ws.get(stream_id).state}
    for step, op in enumerate(sequence):
        before = ws.get(stream_id)
        command = command_for(kind, op, stream_id, refs, step)
        try:
            result = ws.handle(command)
        except DomainError as error:
            # A refused command appends nothing, and undo/redo refuse only when the model agrees.
            assert ws.current_version(stream_id) == before.version
            if op[0] == "undo":
                assert error.code == "nothing_to_undo" and not undo_model
            if op[0] == "redo":
                assert error.code == "nothing_to_redo" and not redo_model
            continue
        after = ws.get(stream_id)
        assert after.version == result.version == before.version + result.appended
        states[after.version] = after.state
        if op[0] == "undo":
            assert after.state == undo_model.pop(), "state after undo = state before the undone change"
            redo_model.append(before.state)
        elif op[0] == "redo":
            assert after.state == redo_model.pop(), "undo then redo = identity"
            undo_model.append(before.state)
        elif result.appended and op[0] != "execute":
            undo_model.append(before.state)
            redo_model.clear()
            assert ws.repository.get(UUID(stream_id)).redo_stack == [], "a new change clears redo"
        else:
            assert after.state == before.state
        check_invariants(ws, stream_id)

    live = ws.repository.get(UUID(stream_id))
    replayed = ws.replay(stream_id)
    assert vars(replayed) == vars(live), "replay from nothing = live state"
    for version in range(1, live.version + 1):
        via_snapshot = ws.repository.get(UUID(stream_id), version=version)
        assert vars(via_snapshot) == vars(ws.replay(stream_id, version)), f"state at v{version}"
        if version in states:
            assert ws.state_at(stream_id, version=version).state == states[version]


@pytest.fixture(scope="module")
def pg_refs(workspace: Workspace) -> dict[str, str]:
    return {"document": create(workspace, "document"), "agent": create(workspace, "agent")}


@pytest.mark.parametrize("kind", ["chain", "document", "agent"])
def test_laws_on_postgres(workspace: Workspace, pg_refs: dict[str, str], kind: str) -> None:
    @PG
    @given(sequence=ops[kind])
    def laws(sequence: list[tuple[Any, ...]]) -> None:
        run_laws(workspace, kind, sequence, pg_refs)

    laws()


@pytest.mark.parametrize("kind", ["chain", "document", "agent"])
def test_laws_in_memory(kind: str) -> None:
    @MEMORY
    @given(sequence=ops[kind])
    def laws(sequence: list[tuple[Any, ...]]) -> None:
        ws = Workspace(env={"PERSISTENCE_MODULE": "eventsourcing.popo"}, snapshot_interval=3)
        refs = {"document": create(ws, "document"), "agent": create(ws, "agent")}
        run_laws(ws, kind, sequence, refs)

    laws()
