"""The client package against a real `chronicle up`: commands, a lost answer retried, typed errors.

This module uses only `chronicle_client`, the standard library and a stdlib TCP proxy
(dropping_proxy.py) that closes the connection after the server has run a command.
"""

from __future__ import annotations

import asyncio
import uuid
from urllib.parse import urlsplit

import pytest

from chronicle_client import (
    AsyncChronicle, Chronicle, ConflictError, Forbidden, NotFound, RetryPolicy, Unauthorized, ValidationError,
)
from tests.client.dropping_proxy import DroppingProxy


@pytest.fixture
def writer(server: str, tokens: dict[str, str]):
    with Chronicle(server, tokens["writer"], session_id="client-tests") as client:
        yield client


@pytest.fixture
def proxy(server: str):
    made = DroppingProxy(urlsplit(server).port)
    yield made
    made.close()


def test_commands_and_reads_on_documents_agents_and_chains(writer: Chronicle) -> None:
    ns = f"client-{uuid.uuid4().hex[:8]}"
    doc = writer.documents.create(ns, "memo", "Brief", content="v1")
    assert doc.stream_version == 1 and doc.appended == 1 and not doc.replayed and writer.position == doc.position
    updated = writer.documents.update(doc.stream_id, content="v2", change_description="second")
    assert updated.stream_version == 2
    read = writer.documents.get(doc.stream_id)  # waits for its own write through min_position
    assert read.content == "v2" and read.document_version == 2 and read.stream_version == 2
    writer.documents.tag(doc.stream_id, "production", 2)
    assert writer.documents.get(doc.stream_id).tags == {"production": 2}
    assert [d.document_id for d in writer.documents.list(namespace=[ns]).documents] == [doc.stream_id]

    agent = writer.agents.create("Planner", "Plan.", "gpt-4o")
    run = writer.agents.record_execution(agent.stream_id, duration_ms=12, tokens=40, output={"ok": True})
    assert run.execution_id and writer.agents.executions(agent.stream_id).executions[0].output == {"ok": True}

    chain = writer.chains.create("Pipeline")
    writer.chains.add_node(chain.stream_id, "brief", "document", doc.stream_id)
    writer.chains.add_node(chain.stream_id, "planner", "agent", agent.stream_id)
    edge = writer.chains.create_edge(chain.stream_id, "brief", "planner", "input")
    got = writer.chains.get(chain.stream_id)
    assert [(e.edge_id, e.source_id, e.target_id) for e in got.edges or []] == [(edge.edge_id, "brief", "planner")]
    assert got.stream_version == edge.stream_version == writer.version_of(chain.stream_id) == 4
    writer.chains.undo(chain.stream_id)
    assert writer.chains.get(chain.stream_id).edges == []


def test_a_command_whose_answer_was_dropped_runs_once(server: str, tokens: dict[str, str], proxy: DroppingProxy) -> None:
    ns = f"drop-{uuid.uuid4().hex[:8]}"
    with Chronicle(proxy.url, tokens["writer"], retry=RetryPolicy(base_delay=0.05)) as client:
        proxy.arm()
        made = client.documents.create(ns, "memo", "Once", content="v1")
        assert proxy.dropped == 1 and made.replayed and made.stream_version == 1
        proxy.arm()
        # The retry sends the same If-Match "1": the stored answer comes back, not a 412.
        updated = client.documents.update(made.stream_id, content="v2")
        assert proxy.dropped == 2 and updated.replayed and updated.stream_version == 2
    with Chronicle(server, tokens["writer"]) as direct:
        assert len(direct.documents.list(namespace=[ns]).documents) == 1
        history = direct.documents.history(made.stream_id)
        assert [v["type"] for v in history["versions"]] == ["document.created", "document.updated"]


def test_a_stale_write_is_a_conflict_error_with_the_current_version(server: str, tokens: dict[str, str],
                                                                     writer: Chronicle) -> None:
    made = writer.documents.create("client", "memo", "Shared", content="v1")
    with Chronicle(server, tokens["writer"]) as other:
        other.documents.get(made.stream_id)                 # sees version 1 (ETag)
        writer.documents.update(made.stream_id, content="v2")
        with pytest.raises(ConflictError) as caught:
            other.documents.update(made.stream_id, content="stale")
        error = caught.value
        assert (error.status, error.code, error.field, error.current_stream_version) == (
            412, "precondition_failed", "If-Match", 2)
        assert other.version_of(made.stream_id) == 2
        assert other.documents.update(made.stream_id, content="v3").stream_version == 3  # after re-reading
        assert other.documents.get(made.stream_id).content == "v3"  # its own write: min_position


def test_problems_are_typed_errors_naming_code_and_field(server: str, tokens: dict[str, str],
                                                         writer: Chronicle) -> None:
    with pytest.raises(NotFound) as missing:
        writer.documents.get(str(uuid.uuid4()))
    assert missing.value.code == "document_not_found" and missing.value.field == "document_id"
    with pytest.raises(ValidationError) as invalid:
        writer.documents.create("client", "memo", "")
    assert invalid.value.status == 422 and invalid.value.field == "title"
    with Chronicle(server, tokens["reader"]) as reader, pytest.raises(Forbidden):
        reader.agents.create("A", "p", "m")
    with Chronicle(server, "chr_not_a_key") as nobody, pytest.raises(Unauthorized):
        nobody.chains.list()


def test_the_asyncio_client(server: str, tokens: dict[str, str]) -> None:
    async def scenario() -> tuple[int, str]:
        async with AsyncChronicle(server, tokens["writer"]) as client:
            chain = await client.chains.create("Async pipeline")
            await client.chains.update(chain.stream_id, description="renamed")
            got = await client.chains.get(chain.stream_id)
            return got.stream_version, got.description or ""

    assert asyncio.run(scenario()) == (2, "renamed")
