"""The application service on PostgreSQL: conflicts, retries, command ids, metadata, time travel.

Runs on Chronicle's persistence module (tests/domain/conftest.py), snapshots every 3 events.
"""

from __future__ import annotations

import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from domain import commands as c
from domain.errors import ConflictError, DomainError, NotFoundError
from service_layer.workspace import MAX_ATTEMPTS, Workspace
from tests.support import run_threads


def new_document(ws: Workspace, **fields: Any) -> str:
    data = {"namespace": "ns", "document_type": "llm_interaction", "title": "Doc", "content": "v1"} | fields
    return ws.handle(c.CreateDocument(**data)).stream_id


def new_agent(ws: Workspace) -> str:
    return ws.handle(c.CreateAgent(name="Agent", prompt="p", model="gpt-4o")).stream_id


def count_events(db: Any, stream_id: str) -> int:
    return db.execute("SELECT count(*) AS n FROM events WHERE stream_id = %s", (stream_id,)).fetchone()["n"]


# -- conflicts and retries ---------------------------------------------------------------------


def test_expected_version_mismatch_is_a_conflict_carrying_the_current_version(workspace: Workspace, db: Any) -> None:
    doc = new_document(workspace)
    assert workspace.handle(c.UpdateDocument(document_id=doc, content="v2", expected_version=1)).version == 2
    with pytest.raises(ConflictError) as caught:
        workspace.handle(c.UpdateDocument(document_id=doc, content="v3", expected_version=1))
    assert caught.value.code == "version_conflict"
    assert (caught.value.current_version, caught.value.expected_version) == (2, 1)
    assert count_events(db, doc) == 2


def interloper(workspace: Workspace, monkeypatch: pytest.MonkeyPatch, doc: str, times: int) -> list[int]:
    """Make another writer append to `doc` right after each of the next `times` decisions."""
    original = Workspace._decide
    writes: list[int] = []

    racing = threading.local()

    def decide_then_race(self: Workspace, command: c.Command, aggregate: Any) -> None:
        original(self, command, aggregate)
        if len(writes) < times and not getattr(racing, "on", False):
            racing.on = True
            try:
                writes.append(self.handle(c.UpdateDocument(document_id=doc, title=f"race {len(writes) + 1}")).version)
            finally:
                racing.on = False

    monkeypatch.setattr(Workspace, "_decide", decide_then_race)
    return writes


def test_without_expected_version_a_conflict_is_retried(workspace: Workspace, monkeypatch, db) -> None:
    doc = new_document(workspace)
    writes = interloper(workspace, monkeypatch, doc, times=2)
    result = workspace.handle(c.UpdateDocument(document_id=doc, content="mine"))
    assert writes == [2, 3]
    assert result.version == 4 and result.appended == 1
    assert workspace.get(doc).state["content"] == "mine"
    assert workspace.get(doc).state["title"] == "race 2"
    assert count_events(db, doc) == 4


def test_retries_are_bounded_then_the_conflict_is_reported(workspace: Workspace, monkeypatch, db) -> None:
    doc = new_document(workspace)
    writes = interloper(workspace, monkeypatch, doc, times=MAX_ATTEMPTS)
    with pytest.raises(ConflictError) as caught:
        workspace.handle(c.UpdateDocument(document_id=doc, content="mine"))
    assert len(writes) == MAX_ATTEMPTS
    assert caught.value.current_version == 1 + MAX_ATTEMPTS
    assert workspace.get(doc).state["content"] == "v1"


def test_with_expected_version_a_conflict_is_not_retried(workspace: Workspace, monkeypatch) -> None:
    doc = new_document(workspace)
    writes = interloper(workspace, monkeypatch, doc, times=3)
    with pytest.raises(ConflictError) as caught:
        workspace.handle(c.UpdateDocument(document_id=doc, content="mine", expected_version=1))
    assert len(writes) == 1 and caught.value.current_version == 2


def test_concurrent_writers_without_expected_version_all_land(workspace: Workspace) -> None:
    doc = new_document(workspace)
    run_threads([
        lambda n=n: workspace.handle(c.UpdateDocument(document_id=doc, metadata={"writer": n})) for n in range(4)
    ])
    assert workspace.current_version(doc) == 5


# -- command ids -------------------------------------------------------------------------------


def test_a_repeated_command_id_returns_the_first_result_and_appends_nothing(workspace: Workspace, db) -> None:
    doc = new_document(workspace)
    command_id = uuid.uuid4()
    first = workspace.handle(c.UpdateDocument(document_id=doc, content="once", command_id=command_id))
    again = workspace.handle(c.UpdateDocument(document_id=doc, content="twice", command_id=command_id))
    assert (again.stream_id, again.version, again.position) == (first.stream_id, first.version, first.position)
    assert again.duplicate and again.appended == 0 and not first.duplicate
    assert count_events(db, doc) == 2
    assert workspace.get(doc).state["content"] == "once"


def test_a_repeated_create_makes_one_stream(workspace: Workspace, db) -> None:
    command = c.CreateAgent(name="A", prompt="p", model="m", command_id=uuid.uuid4())
    first = workspace.handle(command)
    again = workspace.handle(command)
    assert again.stream_id == first.stream_id and again.duplicate
    assert count_events(db, first.stream_id) == 1


def test_concurrent_repeats_of_one_command_id_append_once(workspace: Workspace, db) -> None:
    doc = new_document(workspace)
    command = c.UpdateDocument(document_id=doc, content="once", command_id=uuid.uuid4())
    results: list[Any] = []
    run_threads([lambda: results.append(workspace.handle(command))] * 4)
    assert len(results) == 4 and {r.version for r in results} == {2}
    assert sum(not r.duplicate for r in results) == 1
    assert count_events(db, doc) == 2


# -- metadata and positions --------------------------------------------------------------------


def test_every_event_carries_actor_session_correlation_causation_and_command(workspace: Workspace, db) -> None:
    context = c.CommandContext(actor_id="user-7", actor_type="user", session_id="s-1", causation_id="evt-9")
    chain = workspace.handle(c.CreateChain(name="C"), context).stream_id
    doc, agent = new_document(workspace), new_agent(workspace)
    for node, kind, ref in (("a", "document", doc), ("b", "agent", agent)):
        workspace.handle(c.AddNode(chain_id=chain, node_id=node, kind=kind, ref_id=ref), context)
    workspace.handle(c.CreateEdge(chain_id=chain, edge_id="e", source_id="a", target_id="b", type="flows"), context)
    command_id = uuid.uuid4()
    result = workspace.handle(c.RemoveNode(chain_id=chain, node_id="a", command_id=command_id), context)
    rows = db.execute(
        "SELECT position, version, type, metadata FROM events WHERE stream_id = %s AND version > 4 ORDER BY version",
        (chain,),
    ).fetchall()
    assert [r["type"] for r in rows] == ["edge.deleted", "chain.node_removed"]
    for row in rows:
        assert row["metadata"] == {
            "actor_id": "user-7", "actor_type": "user", "session_id": "s-1", "causation_id": "evt-9",
            "correlation_id": str(command_id), "command_id": str(command_id),
        }
    assert result.position == rows[-1]["position"] and result.version == rows[-1]["version"] == 6
    assert result.appended == 2


def test_stored_payloads_follow_the_contract(workspace: Workspace, db) -> None:
    chain = workspace.handle(c.CreateChain(name="C", description="d")).stream_id
    workspace.handle(c.UpdateChain(chain_id=chain, name="C2"))
    row = db.execute(
        "SELECT type, stream_type, payload FROM events WHERE stream_id = %s AND version = 2", (chain,)
    ).fetchone()
    assert row["type"] == "chain.updated" and row["stream_type"] == "chain"
    assert set(row["payload"]) == {"name", "timestamp"}, "only the fields that changed"


# -- undo, redo, versions ----------------------------------------------------------------------


def test_undoing_a_node_removal_brings_back_its_edges_in_one_step(workspace: Workspace) -> None:
    chain = workspace.handle(c.CreateChain(name="C")).stream_id
    doc, agent = new_document(workspace), new_agent(workspace)
    workspace.handle(c.AddNode(chain_id=chain, node_id="a", kind="document", ref_id=doc))
    workspace.handle(c.AddNode(chain_id=chain, node_id="b", kind="agent", ref_id=agent))
    workspace.handle(c.CreateEdge(chain_id=chain, edge_id="e1", source_id="a", target_id="b", type="flows"))
    workspace.handle(c.CreateEdge(chain_id=chain, edge_id="e2", source_id="b", target_id="a", type="feeds"))
    before = workspace.get(chain)
    workspace.handle(c.RemoveNode(chain_id=chain, node_id="a"))
    assert workspace.get(chain).state["edges"] == {}
    undone = workspace.handle(c.Undo(stream_id=chain))
    assert workspace.get(chain).state == before.state
    last = workspace.history(chain, after_version=undone.version - 1)[0]
    assert last.type == "chain.undone"
    assert (last.payload["undone_version"], last.payload["to_version"]) == (undone.version - 1, before.version)
    workspace.handle(c.Redo(stream_id=chain))
    assert set(workspace.get(chain).state["nodes"]) == {"b"} and workspace.get(chain).state["edges"] == {}


def test_document_versions_are_never_reused(workspace: Workspace) -> None:
    doc = new_document(workspace)
    workspace.handle(c.UpdateDocument(document_id=doc, content="v2"))
    workspace.handle(c.Undo(stream_id=doc))
    assert workspace.get(doc).state["version"] == 1
    workspace.handle(c.UpdateDocument(document_id=doc, content="v3"))
    assert workspace.get(doc).state["version"] == 3
    workspace.handle(c.TagDocument(document_id=doc, tag="production", version=2))  # version 2 existed
    with pytest.raises(DomainError) as caught:
        workspace.handle(c.TagDocument(document_id=doc, tag="staging", version=4))
    assert caught.value.code == "version_not_found"
    with pytest.raises(DomainError) as caught:
        workspace.handle(c.Redo(stream_id=doc))
    assert caught.value.code == "nothing_to_redo"


def test_an_execution_is_a_record_undo_skips(workspace: Workspace) -> None:
    agent = new_agent(workspace)
    workspace.handle(c.UpdateAgent(agent_id=agent, prompt="longer"))
    workspace.handle(c.RecordExecution(agent_id=agent, execution_id="x1", input={"q": 1}, output="a",
                                       duration_ms=12, tokens=30))
    workspace.handle(c.Undo(stream_id=agent))
    assert workspace.get(agent).state["prompt"] == "p"
    assert workspace.replay(agent).executions == 1


def test_a_no_op_command_appends_nothing(workspace: Workspace, db) -> None:
    doc = new_document(workspace)
    result = workspace.handle(c.UpdateDocument(document_id=doc, content="v1"))
    assert (result.version, result.position, result.appended) == (1, None, 0)
    assert count_events(db, doc) == 1


# -- time travel and diff ----------------------------------------------------------------------


def test_state_at_a_version_and_at_a_time(workspace: Workspace, db) -> None:
    doc = new_document(workspace)
    moments = []
    for n in range(2, 9):
        workspace.handle(c.UpdateDocument(document_id=doc, content=f"v{n}"))
        moments.append(datetime.now(timezone.utc))
        time.sleep(0.002)
    assert db.execute("SELECT count(*) AS n FROM snapshots WHERE stream_id = %s", (doc,)).fetchone()["n"] == 2
    for n in range(1, 9):
        assert workspace.state_at(doc, version=n).state["content"] == f"v{n}"
    for n, moment in enumerate(moments, start=2):
        at = workspace.state_at(doc, at=moment)
        assert (at.version, at.state["content"]) == (n, f"v{n}")
    with pytest.raises(NotFoundError):
        workspace.state_at(doc, at=datetime.now(timezone.utc) - timedelta(days=1))
    with pytest.raises(DomainError) as caught:
        workspace.state_at(doc, version=9)
    assert caught.value.code == "version_not_found"


def test_diff_names_each_changed_field(workspace: Workspace) -> None:
    doc = new_document(workspace, metadata={"a": 1, "b": 2})
    workspace.handle(c.UpdateDocument(document_id=doc, title="New", metadata={"a": 1, "c": 3}))
    workspace.handle(c.TagDocument(document_id=doc, tag="production", version=2))
    changes = {(ch.field, ch.change, repr(ch.before), repr(ch.after)) for ch in workspace.diff(doc, 1, 3).changes}
    assert changes == {
        ("title", "changed", "'Doc'", "'New'"),
        ("metadata.b", "removed", "2", "None"),
        ("metadata.c", "added", "None", "3"),
        ("version", "changed", "1", "2"),
        ("tags.production", "added", "None", "2"),
    }
    assert workspace.diff(doc, 3, 3).changes == []
