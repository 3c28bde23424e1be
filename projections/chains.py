"""The chains read model: `chain` (chain, canvas and nodes) and its live `edge` rows.

Every event of a chain stream reshapes its snapshot row, so `last_version` is the stream's version.
"""

from __future__ import annotations

from typing import Any

from projections.model import Event, Output, Projector, Row, StateTable, StreamRows, pick

CHAIN = StateTable("chain", "chain_id")
EDGE = StateTable("edge", "chain_id", key="edge_id")

projector = Projector("chains", ("chain",), (CHAIN, EDGE), ())



def _chain_row(s: StreamRows, e: Event, state: dict[str, Any], created_at: str) -> Row:
    return {
        "chain_id": s.stream_id,
        "name": state.get("name"),
        "description": state.get("description"),
        "metadata": state.get("metadata") or {},
        # A new chain's canvas is empty, not unknown: the domain's state says {}.
        "canvas_state": state.get("canvas_state") or {},
        "viewport": state.get("viewport") or {},
        "nodes": state.get("nodes") or {},
        "created_at": created_at,
        "updated_at": e.recorded_at,
        **e.shape(),
    }


def _edge_row(s: StreamRows, e: Event, edge_id: str, fields: dict[str, Any], created_at: str) -> Row:
    return {
        "chain_id": s.stream_id,
        "edge_id": edge_id,
        "source_id": fields.get("source_id"),
        "target_id": fields.get("target_id"),
        "type": fields.get("type"),
        "metadata": fields.get("metadata") or {},
        "created_at": created_at,
        "updated_at": e.recorded_at,
        **e.shape(),
    }


@projector.on("chain.created")
def created(s: StreamRows, e: Event, out: Output) -> None:
    s.set_one(CHAIN.name, _chain_row(s, e, e.payload, e.recorded_at))
    s.many(EDGE.name).clear()


@projector.on("chain.updated", "chain.canvas_updated")
def updated(s: StreamRows, e: Event, out: Output) -> None:
    row = s.touch(CHAIN.name, e)
    if row is not None:
        pick(e.payload, row, "name", "description", "metadata", "canvas_state", "viewport")


@projector.on("chain.node_added")
def node_added(s: StreamRows, e: Event, out: Output) -> None:
    row = s.touch(CHAIN.name, e)
    if row is not None:
        p = e.payload
        row["nodes"] = dict(row["nodes"] or {})
        row["nodes"][p["node_id"]] = {"kind": p.get("kind"), "ref_id": p.get("ref_id"), "position": p.get("position")}


@projector.on("chain.node_removed")
def node_removed(s: StreamRows, e: Event, out: Output) -> None:
    row = s.touch(CHAIN.name, e)
    if row is not None:
        row["nodes"] = {k: v for k, v in (row["nodes"] or {}).items() if k != e.payload["node_id"]}


@projector.on("chain.deleted")
def deleted(s: StreamRows, e: Event, out: Output) -> None:
    s.set_one(CHAIN.name, None)
    s.many(EDGE.name).clear()


@projector.on("edge.created")
def edge_created(s: StreamRows, e: Event, out: Output) -> None:
    if s.touch(CHAIN.name, e) is not None:
        p = e.payload
        s.many(EDGE.name)[p["edge_id"]] = _edge_row(s, e, p["edge_id"], p, e.recorded_at)


@projector.on("edge.updated")
def edge_updated(s: StreamRows, e: Event, out: Output) -> None:
    s.touch(CHAIN.name, e)
    edges = s.many(EDGE.name)
    old = edges.get(e.payload["edge_id"])
    if old is not None:
        row = dict(old, updated_at=e.recorded_at, **e.shape())
        pick(e.payload, row, "type", "metadata")
        edges[row["edge_id"]] = row


@projector.on("edge.deleted")
def edge_deleted(s: StreamRows, e: Event, out: Output) -> None:
    s.touch(CHAIN.name, e)
    s.many(EDGE.name).pop(e.payload["edge_id"], None)


@projector.on("chain.undone", "chain.redone")
def undone(s: StreamRows, e: Event, out: Output) -> None:
    """Replace the chain's rows with the state the event carries."""
    state = e.payload["state"]
    edges = s.many(EDGE.name)
    if state.get("deleted"):
        s.set_one(CHAIN.name, None)
        edges.clear()
        return
    old = s.one(CHAIN.name)
    s.set_one(CHAIN.name, _chain_row(s, e, state, old["created_at"] if old else e.recorded_at))
    wanted = state.get("edges") or {}
    for edge_id in [k for k in edges if k not in wanted]:
        del edges[edge_id]
    for edge_id, fields in wanted.items():
        before = edges.get(edge_id)
        same = before is not None and all(
            before[c] == fields.get(c) for c in ("source_id", "target_id", "type")
        ) and before["metadata"] == (fields.get("metadata") or {})
        if not same:
            created_at = before["created_at"] if before else e.recorded_at
            edges[edge_id] = _edge_row(s, e, edge_id, fields, created_at)
