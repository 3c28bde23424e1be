"""The agents read model: `agent` (current agent) and `agent_execution` (its runs).

Executions stay after their agent is deleted: they are history.
"""

from __future__ import annotations

from typing import Any

from projections.model import Event, LogTable, Output, Projector, Row, StateTable, StreamRows, actor, pick

AGENT = StateTable("agent", "agent_id")
EXECUTION = LogTable("agent_execution", ("agent_id", "execution_id"))

projector = Projector("agents", ("agent",), (AGENT,), (EXECUTION,))
FIELDS = ("name", "prompt", "model", "tools", "metadata")


def _row(s: StreamRows, e: Event, state: dict[str, Any], created_at: str) -> Row:
    return {
        "agent_id": s.stream_id, "name": state.get("name"), "prompt": state.get("prompt"),
        "model": state.get("model"), "tools": state.get("tools"), "metadata": state.get("metadata") or {},
        "created_at": created_at, "updated_at": e.recorded_at, **e.shape(),
    }



@projector.on("agent.created")
def created(s: StreamRows, e: Event, out: Output) -> None:
    s.set_one(AGENT.name, _row(s, e, e.payload, e.recorded_at))


@projector.on("agent.updated")
def updated(s: StreamRows, e: Event, out: Output) -> None:
    row = s.touch(AGENT.name, e)
    if row is not None:
        pick(e.payload, row, *FIELDS)


@projector.on("agent.deleted")
def deleted(s: StreamRows, e: Event, out: Output) -> None:
    s.set_one(AGENT.name, None)


@projector.on("agent.executed")
def executed(s: StreamRows, e: Event, out: Output) -> None:
    s.touch(AGENT.name, e)
    p = e.payload
    out.add(EXECUTION, {
        "agent_id": s.stream_id, "execution_id": str(p["execution_id"]), "input": p.get("input"),
        "output": p.get("output"), "duration_ms": p.get("duration_ms"), "tokens": p.get("tokens"),
        "metadata": p.get("metadata") or {}, "session_id": actor(e)[2], "created_at": e.recorded_at,
        **e.shape(),
    })


@projector.on("agent.undone", "agent.redone")
def undone(s: StreamRows, e: Event, out: Output) -> None:
    """Replace the agent's row with the state the event carries."""
    state = e.payload["state"]
    old = s.one(AGENT.name)
    s.set_one(AGENT.name, None if state.get("deleted") else _row(s, e, state, old["created_at"] if old else e.recorded_at))
