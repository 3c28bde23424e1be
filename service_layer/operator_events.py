"""Operator actions as events: who rebuilt, replayed, verified, retried, skipped or issued what, and when.

They go to one `operator` stream (stream type "operator"), so the audit log holds them
beside the workspace's own events and `GET /v1/events?stream_type=operator` lists them.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

import psycopg
from pydantic import BaseModel, ConfigDict, Field

from domain.event_types import registry
from infrastructure.event_store import ANY, AppendResult, EventMetadata, EventStore, NewEvent
from domain.ids import uuid7

OPERATOR_STREAM = "operator"


class OperatorAction(BaseModel):
    """What an operator did: the target (a projection, a dead letter, a key) and details."""

    model_config = ConfigDict(extra="forbid")

    target: str = Field(max_length=300)
    details: dict[str, Any] = Field(default_factory=dict)


OPERATOR_EVENT_TYPES = (
    # A rebuild or replay job: requested (by whom, options), then done or failed (by the worker,
    # attributed to the requester, with the job id, events done and duration).
    "operator.projection_rebuild_requested",
    "operator.projection_rebuilt",
    "operator.projection_rebuild_failed",
    "operator.projection_replay_requested",
    "operator.projection_replayed",
    "operator.projection_replay_failed",
    "operator.projection_verified",
    "operator.dead_letter_retried",
    "operator.dead_letter_skipped",
    "operator.key_created",
    "operator.key_revoked",
    # A consumer group's checkpoints were moved (service_layer.group_seek), from where to where.
    "operator.group_moved",
    # A data subject was forgotten: its key destroyed, its derived copies purged (service_layer.erasure).
    "subject.forgotten",
)

for _name in OPERATOR_EVENT_TYPES:
    if _name not in registry:
        # One model for every operator action; each type name gets its own subclass so the
        # registry's name_of() stays one-to-one.
        registry.register(_name, stream_type="operator")(
            type(_name.split(".")[1].title().replace("_", ""), (OperatorAction,), {"__module__": __name__})
        )


def record_operator_action(
    store: EventStore,
    event_type: str,
    target: str,
    details: dict[str, Any] | None = None,
    *,
    actor_id: str,
    actor_type: str = "user",
    correlation_id: str | None = None,
    session_id: str | None = None,
) -> AppendResult:
    """Append one operator action to the operator stream, attributed to its actor.

    The stream is appended with expected version "any": operator actions never conflict.
    """
    metadata = EventMetadata(
        actor_id=actor_id, actor_type=actor_type, correlation_id=correlation_id, session_id=session_id
    )
    return store.append(
        OPERATOR_STREAM,
        ANY,
        [NewEvent(event_type, {"target": target, "details": details or {}})],
        metadata,
        stream_type="operator",
    )


def record_operator_action_on(
    conn: psycopg.Connection,
    store: EventStore,
    event_type: str,
    target: str,
    details: dict[str, Any],
    metadata: EventMetadata,
    *,
    event_id: UUID | None = None,
) -> AppendResult:
    """`record_operator_action` inside the caller's transaction (with the row it records).

    The caller passes the result to `store.committed` after its commit. A fixed `event_id`
    makes a repeated record (a retry after a crash) append nothing.
    """
    event = NewEvent(event_type, {"target": target, "details": details}, event_id=event_id or uuid7())
    return store.append_on(conn, OPERATOR_STREAM, ANY, [event], metadata, stream_type="operator")
