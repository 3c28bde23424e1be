"""Operator actions and views shared by the HTTP API and the console.

Each action records the same `operator.*` event whoever calls it, attributed to the key's
actor. A refused action raises OperationRefused, whose code, status and field the API turns
into problem+json and the console into an error page.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any

from psycopg_pool import ConnectionPool

from infrastructure.event_store import EventStore
from infrastructure.log_status import read_log_status
from projections import jobs
from projections.catalog import PROJECTORS
from projections.dead_letters import retry_dead_letters, skip_dead_letter
from projections.status import status
from projections.verify import verify
from service_layer.keys import ApiKey, create_key, revoke_key
from service_layer.operator_events import record_operator_action

logger = logging.getLogger("chronicle.operations")


class OperationRefused(ValueError):
    """An operator action or view that cannot be done; `code`, `http_status` and `field` say why."""

    def __init__(self, http_status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.http_status, self.code, self.field = http_status, code, field


@dataclass(frozen=True)
class Operator:
    """Who acts: the key (its actor is recorded) and the request's correlation id."""

    key: ApiKey
    correlation_id: str | None = None

    def record(self, store: EventStore, event_type: str, target: str, details: dict[str, Any]) -> int:
        """Append the `operator.*` event of an action by this key; its log position."""
        return record_operator_action(
            store, event_type, target, details, actor_id=self.key.actor_id, actor_type=self.key.actor_type,
            correlation_id=self.correlation_id,
        ).position


def plain(value: Any) -> dict[str, Any]:
    """A dataclass as JSON-able data (datetimes as ISO 8601)."""
    data = asdict(value)
    return {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in data.items()}


def known_projection(name: str) -> str:
    """`name` if it is a projection; else OperationRefused 404 naming the known ones."""
    if name not in PROJECTORS:
        raise OperationRefused(404, "projection_not_found",
                               f"no projection {name!r}; known: {', '.join(sorted(PROJECTORS))}", field="name")
    return name


def log_view(pool: ConnectionPool, store: EventStore) -> dict[str, Any]:
    """The log's head, safe position, held-back start, and the open transactions holding it back."""
    with pool.connection() as conn:
        log = read_log_status(conn).public()
    now = datetime.now(timezone.utc)
    blockers = [
        {
            "pid": b.pid, "held_position": b.held_position,
            "xact_start": b.xact_start.isoformat() if b.xact_start else None,
            "held_for_seconds": round((now - b.xact_start).total_seconds(), 3) if b.xact_start else None,
            "state": b.state, "application_name": b.application_name,
            "query": (b.query or "")[:500] or None,
        }
        for b in store.blockers()
    ]
    return {**log, "blockers": blockers}


def projections_view(pool: ConnectionPool, store: EventStore) -> dict[str, Any]:
    """Every projection's partitions (checkpoint, lag, state), its latest rebuild and replay, and the log."""
    partitions = [plain(p) for p in status(pool)]
    return {
        "projections": [
            {
                "name": name,
                "partitions": [p for p in partitions if p["projection"] == name],
                "lag_events": sum(p["lag_events"] for p in partitions if p["projection"] == name),
                "dead_letters": sum(p["dead_letters"] for p in partitions if p["projection"] == name),
                "rebuild": jobs.job_view(pool, projection=name),
                "replay": jobs.job_view(pool, projection=name, kind="replay"),
            }
            for name in PROJECTORS
        ],
        "log": log_view(pool, store),
    }


def job_progress(pool: ConnectionPool, kind: jobs.Kind, name: str) -> dict[str, Any]:
    """The projection's latest job of `kind` with its progress; OperationRefused 404 if none."""
    known_projection(name)
    view = jobs.job_view(pool, projection=name, kind=kind)
    if view is None:
        done = "rebuilt" if kind == "rebuild" else "replayed"
        raise OperationRefused(404, f"{kind}_not_found", f"projection {name!r} was never {done}", field="name")
    return view


def request_job(store: EventStore, wake_job: Callable[[str, str], None] | None, who: Operator, kind: jobs.Kind,
                name: str, options: dict[str, Any]) -> dict[str, Any]:
    """Write a requested rebuild or replay with its operator event and wake a worker.

    OperationRefused 409 if one of this kind is already requested or running.
    """
    from workers import jobs as worker_jobs  # the job runtime owns the request's transaction

    known_projection(name)
    try:
        requested = worker_jobs.request(
            store, kind, name, options, actor_id=who.key.actor_id, actor_type=who.key.actor_type,
            correlation_id=who.correlation_id, details={"requested_by_key": who.key.key_id})
    except jobs.JobInProgress as exc:
        raise OperationRefused(409, f"{kind}_in_progress", str(exc), field="name") from None
    if wake_job is not None:
        try:
            wake_job(kind, name)
        except Exception:  # noqa: BLE001 - a wake-up is a hint; the workers' tick finds the job
            logger.exception("wake-up for the %s job of %s failed", kind, name)
    return {"projection": name, "job_id": requested.job.id, "state": requested.job.state, **options,
            "position": requested.position}


def wake(wake_projection: Callable[[str | None], None] | None, name: str | None = None) -> None:
    """Ask the workers to catch up now (after a retry or skip); ticks cover a lost ask."""
    if wake_projection is None:
        return
    try:
        wake_projection(name)
    except Exception:  # noqa: BLE001 - a wake-up is a hint; the periodic tick covers it
        logger.exception("wake-up after an operator action failed")


def parked_dead_letter(pool: ConnectionPool, dead_letter_id: int) -> dict[str, Any]:
    """A parked dead letter's projection and stream; OperationRefused 404 if none, 409 if resolved."""
    with pool.connection() as conn:
        row = conn.execute(
            "SELECT id, projection, stream_id, status FROM dead_letter WHERE id = %s AND NOT shadow", (dead_letter_id,)
        ).fetchone()
    if row is None:
        raise OperationRefused(404, "dead_letter_not_found", f"no dead letter {dead_letter_id}", field="dead_letter_id")
    if row["status"] != "parked":
        raise OperationRefused(409, "dead_letter_resolved", f"dead letter {dead_letter_id} is already {row['status']}",
                               field="dead_letter_id")
    return row


def resolve_dead_letter(pool: ConnectionPool, store: EventStore, wake_projection: Callable[[str | None], None] | None,
                        who: Operator, dead_letter_id: int, action: str) -> dict[str, Any]:
    """Retry (the stream's parked events, in order) or skip (this one) a dead letter, and record it.

    Returns the streams that resumed, those still parked, and the operator event's position.
    """
    row = parked_dead_letter(pool, dead_letter_id)
    if action == "retry":
        outcome = retry_dead_letters(pool, row["projection"], stream_id=row["stream_id"])
    else:
        try:
            outcome = skip_dead_letter(pool, dead_letter_id)
        except KeyError:
            raise OperationRefused(409, "dead_letter_resolved", f"dead letter {dead_letter_id} is no longer parked",
                                   field="dead_letter_id") from None
    event_type = "operator.dead_letter_retried" if action == "retry" else "operator.dead_letter_skipped"
    position = who.record(store, event_type, f"dead_letter:{dead_letter_id}",
                          {"projection": row["projection"], "stream_id": row["stream_id"],
                           "resumed": outcome.resumed, "still_parked": outcome.still_parked})
    if row["projection"] in PROJECTORS:  # a consumer group's letters are fetched again, nothing to wake
        wake(wake_projection, row["projection"])
    return {"resumed": outcome.resumed, "still_parked": outcome.still_parked, "position": position}


def verify_recorded(pool: ConnectionPool, store: EventStore, who: Operator, name: str) -> tuple[dict[str, Any], int]:
    """Compare a projection with a rebuild from the log, record `operator.projection_verified`;
    the report and the event's position."""
    known_projection(name)
    report = verify(pool, name).as_dict()
    return report, who.record(store, "operator.projection_verified", f"projection:{name}", report)


def create_key_recorded(pool: ConnectionPool, store: EventStore, who: Operator, name: str, role: str,
                        actor_id: str | None, actor_type: str) -> tuple[ApiKey, str]:
    """Create a key (its token is returned this once) and record `operator.key_created`."""
    try:
        key, token = create_key(pool, name, role, actor_id=actor_id, actor_type=actor_type,
                                created_by=who.key.actor_id)
    except ValueError as exc:
        raise OperationRefused(422, getattr(exc, "code", "validation_error"), str(exc),
                               field=getattr(exc, "field", None)) from None
    who.record(store, "operator.key_created", f"key:{key.key_id}", {"role": key.role, "name": key.name})
    return key, token


def revoke_key_recorded(pool: ConnectionPool, store: EventStore, who: Operator, key_id: str) -> ApiKey:
    """Revoke a key at once and record `operator.key_revoked`; OperationRefused 404 if unknown."""
    key = revoke_key(pool, key_id[:50])
    if key is None:
        raise OperationRefused(404, "key_not_found", f"no key {key_id[:50]!r}", field="key_id")
    who.record(store, "operator.key_revoked", f"key:{key.key_id}", {"name": key.name})
    return key


def command_rate(pool: ConnectionPool, seconds: int) -> int:
    """How many commands appended events in the last `seconds`: distinct command ids, or correlation ids
    for commands sent without one (the API gives each request its own); events_recorded_at_idx."""
    with pool.connection() as conn:
        row = conn.execute(
            "SELECT count(DISTINCT coalesce(metadata->>'command_id', metadata->>'correlation_id')) AS n FROM events"
            " WHERE recorded_at > now() - make_interval(secs => %s)", (seconds,)).fetchone()
    return row["n"]
