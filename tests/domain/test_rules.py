"""Every bad command gets a clear error naming the rule (code) and the field, and appends nothing.

Runs on PostgreSQL; the number of stored events in the stream is compared before and after.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from domain import commands as c
from domain.errors import DomainError
from domain.rules import MAX_CONTENT_BYTES, MAX_METADATA_BYTES
from service_layer.workspace import Workspace

BIG = "x" * (MAX_CONTENT_BYTES + 1)
BIG_METADATA = {"k": "x" * MAX_METADATA_BYTES}
MISSING = str(uuid.uuid4())


@pytest.fixture(scope="module")
def s(workspace: Workspace) -> dict[str, str]:
    """Streams to aim bad commands at."""
    ws = workspace
    doc = ws.handle(c.CreateDocument(namespace="ns", document_type="user_feedback", title="T", content="c")).stream_id
    body_doc = ws.handle(
        c.CreateDocument(namespace="ns", document_type="workflow_definition", title="B", body={"steps": []})
    ).stream_id
    gone_doc = ws.handle(c.CreateDocument(namespace="ns", document_type="x", title="G", content="c")).stream_id
    ws.handle(c.DeleteDocument(document_id=gone_doc))
    agent = ws.handle(c.CreateAgent(name="A", prompt="p", model="gpt-4o")).stream_id
    gone_agent = ws.handle(c.CreateAgent(name="G", prompt="p", model="gpt-4o")).stream_id
    ws.handle(c.DeleteAgent(agent_id=gone_agent))
    chain = ws.handle(c.CreateChain(name="C")).stream_id
    ws.handle(c.AddNode(chain_id=chain, node_id="a", kind="document", ref_id=doc))
    ws.handle(c.AddNode(chain_id=chain, node_id="b", kind="agent", ref_id=agent))
    ws.handle(c.CreateEdge(chain_id=chain, edge_id="e", source_id="a", target_id="b", type="flows"))
    other_chain = ws.handle(c.CreateChain(name="Other")).stream_id
    ws.handle(c.AddNode(chain_id=other_chain, node_id="z", kind="document", ref_id=doc))
    gone_chain = ws.handle(c.CreateChain(name="G")).stream_id
    ws.handle(c.DeleteChain(chain_id=gone_chain))
    return {"doc": doc, "body_doc": body_doc, "gone_doc": gone_doc, "agent": agent, "gone_agent": gone_agent,
            "chain": chain, "gone_chain": gone_chain}


# (stream key, command builder, code, field)
BAD: list[tuple[str, Any, str, str | None]] = [
    # chains
    ("chain", lambda s: c.UpdateChain(chain_id=s["chain"], name="  "), "invalid_name", "name"),
    ("chain", lambda s: c.UpdateChain(chain_id=s["chain"], name="x" * 201), "too_large", "name"),
    ("chain", lambda s: c.UpdateChain(chain_id=s["chain"], name="a\nb"), "invalid_name", "name"),
    ("chain", lambda s: c.UpdateChain(chain_id=s["chain"], metadata=BIG_METADATA), "too_large", "metadata"),
    ("chain", lambda s: c.UpdateCanvas(chain_id=s["chain"], canvas_state={"x": float("nan")}, viewport={}),
     "invalid_json", "canvas_state"),
    ("chain", lambda s: c.AddNode(chain_id=s["chain"], node_id="a", kind="document", ref_id=s["doc"]),
     "duplicate_id", "node_id"),
    ("chain", lambda s: c.AddNode(chain_id=s["chain"], node_id="bad id!", kind="document", ref_id=s["doc"]),
     "invalid_identifier", "node_id"),
    ("chain", lambda s: c.AddNode(chain_id=s["chain"], node_id="n", kind="robot", ref_id=s["agent"]),
     "invalid_node_kind", "kind"),
    ("chain", lambda s: c.AddNode(chain_id=s["chain"], node_id="n", kind="document", ref_id=s["agent"]),
     "node_ref_not_found", "ref_id"),
    ("chain", lambda s: c.AddNode(chain_id=s["chain"], node_id="n", kind="agent", ref_id=MISSING),
     "node_ref_not_found", "ref_id"),
    ("chain", lambda s: c.RemoveNode(chain_id=s["chain"], node_id="nope"), "node_not_found", "node_id"),
    ("chain", lambda s: c.CreateEdge(chain_id=s["chain"], edge_id="f", source_id="a", target_id="a", type="t"),
     "self_edge", "target_id"),
    ("chain", lambda s: c.CreateEdge(chain_id=s["chain"], edge_id="f", source_id="a", target_id="z", type="t"),
     "node_not_found", "target_id"),
    ("chain", lambda s: c.CreateEdge(chain_id=s["chain"], edge_id="e", source_id="b", target_id="a", type="t"),
     "duplicate_id", "edge_id"),
    ("chain", lambda s: c.CreateEdge(chain_id=s["chain"], edge_id="f", source_id="a", target_id="b", type="flows"),
     "duplicate_edge", "edge_id"),
    ("chain", lambda s: c.CreateEdge(chain_id=s["chain"], edge_id="f", source_id="a", target_id="b", type="Bad Type"),
     "invalid_identifier", "type"),
    ("chain", lambda s: c.UpdateEdge(chain_id=s["chain"], edge_id="nope", type="t"), "edge_not_found", "edge_id"),
    ("chain", lambda s: c.DeleteEdge(chain_id=s["chain"], edge_id="e", reason="node_removed"), "invalid_text",
     "reason"),
    ("chain", lambda s: c.Redo(stream_id=s["chain"]), "nothing_to_redo", None),
    ("chain", lambda s: c.UpdateChain(chain_id=s["chain"], name="x", expected_version=1), "version_conflict",
     "expected_version"),
    ("gone_chain", lambda s: c.UpdateChain(chain_id=s["gone_chain"], name="x"), "chain_deleted", "chain_id"),
    ("gone_chain", lambda s: c.DeleteChain(chain_id=s["gone_chain"]), "chain_deleted", "chain_id"),
    ("doc", lambda s: c.UpdateChain(chain_id=s["doc"], name="x"), "not_found", "chain_id"),
    # documents
    ("doc", lambda s: c.UpdateDocument(document_id=s["doc"], content=BIG), "too_large", "content"),
    ("doc", lambda s: c.UpdateDocument(document_id=s["doc"], body={"a": 1}), "content_kind", "body"),
    ("body_doc", lambda s: c.UpdateDocument(document_id=s["body_doc"], content="text"), "content_kind", "content"),
    ("doc", lambda s: c.UpdateDocument(document_id=s["doc"], title=""), "invalid_name", "title"),
    ("doc", lambda s: c.TagDocument(document_id=s["doc"], tag="production", version=2), "version_not_found",
     "version"),
    ("doc", lambda s: c.TagDocument(document_id=s["doc"], tag="production", version=0), "invalid_number", "version"),
    ("doc", lambda s: c.TagDocument(document_id=s["doc"], tag="Prod Uction", version=1), "invalid_identifier", "tag"),
    ("doc", lambda s: c.UntagDocument(document_id=s["doc"], tag="staging"), "tag_not_found", "tag"),
    ("doc", lambda s: c.RestoreDocument(document_id=s["doc"]), "not_deleted", "document_id"),
    ("doc", lambda s: c.Undo(stream_id=s["doc"]), "nothing_to_undo", None),
    ("gone_doc", lambda s: c.UpdateDocument(document_id=s["gone_doc"], content="x"), "document_deleted",
     "document_id"),
    ("gone_doc", lambda s: c.TagDocument(document_id=s["gone_doc"], tag="p", version=1), "document_deleted",
     "document_id"),
    ("gone_doc", lambda s: c.DeleteDocument(document_id=s["gone_doc"]), "document_deleted", "document_id"),
    ("doc", lambda s: c.UpdateDocument(document_id=MISSING, content="x"), "not_found", "document_id"),
    # agents
    ("agent", lambda s: c.UpdateAgent(agent_id=s["agent"], model="not a model"), "invalid_identifier", "model"),
    ("agent", lambda s: c.UpdateAgent(agent_id=s["agent"], tools=[1]), "invalid_json", "tools.0"),
    ("agent", lambda s: c.UpdateAgent(agent_id=s["agent"], tools=["t"] * 65), "too_large", "tools"),
    ("agent", lambda s: c.RecordExecution(agent_id=s["agent"], execution_id="x", duration_ms=-1, tokens=1),
     "invalid_number", "duration_ms"),
    ("agent", lambda s: c.RecordExecution(agent_id=s["agent"], execution_id="x", input=BIG * 2, duration_ms=1,
                                          tokens=1), "too_large", "input"),
    ("gone_agent", lambda s: c.RecordExecution(agent_id=s["gone_agent"], execution_id="x", duration_ms=1, tokens=1),
     "agent_deleted", "agent_id"),
    ("gone_agent", lambda s: c.UpdateAgent(agent_id=s["gone_agent"], name="n"), "agent_deleted", "agent_id"),
]


@pytest.mark.parametrize(("stream", "build", "code", "field"), BAD, ids=[f"{b[2]}-{i}" for i, b in enumerate(BAD)])
def test_a_bad_command_is_refused_with_its_rule_and_appends_nothing(
    workspace: Workspace, db: Any, s: dict[str, str], stream: str, build: Any, code: str, field: str | None
) -> None:
    before = db.execute("SELECT count(*) AS n, max(position) AS last FROM events").fetchone()
    with pytest.raises(DomainError) as caught:
        workspace.handle(build(s))
    assert (caught.value.code, caught.value.field) == (code, field)
    assert str(caught.value)
    after = db.execute("SELECT count(*) AS n, max(position) AS last FROM events").fetchone()
    assert after == before


@pytest.mark.parametrize(
    ("build", "code"),
    [
        (lambda: c.CreateChain(name=""), "invalid_name"),
        (lambda: c.CreateDocument(namespace="NS!", document_type="t", title="T", content="c"), "invalid_identifier"),
        (lambda: c.CreateDocument(namespace="ns", document_type="t", title="T"), "content_or_body"),
        (lambda: c.CreateDocument(namespace="ns", document_type="t", title="T", content="c", body={}),
         "content_or_body"),
        (lambda: c.CreateAgent(name="A", prompt="p\x00", model="m"), "invalid_text"),
    ],
)
def test_a_bad_create_is_refused(workspace: Workspace, db: Any, build: Any, code: str) -> None:
    before = db.execute("SELECT count(*) AS n FROM events").fetchone()
    with pytest.raises(DomainError) as caught:
        workspace.handle(build())
    assert caught.value.code == code
    assert db.execute("SELECT count(*) AS n FROM events").fetchone() == before


def test_creating_an_existing_stream_is_refused(workspace: Workspace, s: dict[str, str]) -> None:
    with pytest.raises(DomainError) as caught:
        workspace.handle(c.CreateAgent(agent_id=s["agent"], name="A", prompt="p", model="m"))
    assert (caught.value.code, caught.value.field) == ("already_exists", "agent_id")


def test_a_malformed_command_names_its_field() -> None:
    with pytest.raises(DomainError) as caught:
        c.TagDocument(document_id="not-a-uuid", tag="p", version=1)
    assert (caught.value.code, caught.value.field) == ("invalid_command", "document_id")
    assert isinstance(c.Undo(stream_id=str(uuid.uuid4())), c.Undo)
