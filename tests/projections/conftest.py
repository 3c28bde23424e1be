"""Fixtures for the projection tests: a permissive registry following the event contract,
an event store on a fresh database, and helpers to project and compare tables."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pydantic import BaseModel, ConfigDict

from domain.event_types import EventTypeRegistry
from infrastructure.db import create_pool
from infrastructure.event_store import EventStore
from projections.catalog import PROJECTORS
from projections.engine import catch_up

CONTRACT_TYPES = [
    "chain.created", "chain.updated", "chain.canvas_updated", "chain.node_added", "chain.node_removed",
    "chain.deleted", "chain.undone", "chain.redone", "edge.created", "edge.updated", "edge.deleted",
    "document.created", "document.updated", "document.deleted", "document.restored", "document.tagged",
    "document.untagged", "document.undone", "document.redone",
    "agent.created", "agent.updated", "agent.deleted", "agent.executed", "agent.undone", "agent.redone",
]


def contract_registry() -> EventTypeRegistry:
    """A registry whose permissive models accept the contract's payloads."""
    reg = EventTypeRegistry()
    for name in CONTRACT_TYPES:
        model = type(name.replace(".", "_"), (BaseModel,), {"model_config": ConfigDict(extra="allow")})
        stream_type = "chain" if name.startswith("edge.") else name.split(".")[0]
        reg.register(name, stream_type=stream_type)(model)
    return reg


REGISTRY = contract_registry()

# Columns that differ between equal histories only by physical layout (none: rows are deterministic).
TABLE_KEYS = {
    "chain": "chain_id", "edge": "chain_id, edge_id", "document": "document_id",
    "document_body": "body_hash", "document_version": "document_id, version",
    "document_tombstone": "document_id", "active_tag": "tag, document_id", "tag_event": "event_id, tag",
    "agent": "agent_id", "agent_execution": "agent_id, execution_id",
    "session_touch": "session_id, document_id",
}


def dump_tables(pool) -> dict[str, list]:
    """Every snapshot table's rows as JSON, in key order."""
    with pool.connection() as conn:
        return {t: [r["j"] for r in conn.execute(f"SELECT to_jsonb(x) AS j FROM {t} x ORDER BY {k}").fetchall()]
                for t, k in TABLE_KEYS.items()}


def project_all(pool, partitions: int = 4, **kw) -> int:
    """Catch every partition of every projection up; return events applied."""
    total = 0
    for projector in PROJECTORS.values():
        for k in range(partitions):
            total += catch_up(pool, projector, k, partitions=partitions, **kw).processed
    return total


@pytest.fixture
def proj_pool(fresh_database_url, settings) -> Iterator:
    pool = create_pool(fresh_database_url, settings, name="chronicle-projection-tests")
    yield pool
    pool.close()


@pytest.fixture
def store(proj_pool, settings) -> EventStore:
    return EventStore(proj_pool, REGISTRY, settings)
