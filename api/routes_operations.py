"""The operators' routes: projection status, rebuild, replay and verify, dead letters.

Each action is recorded as an `operator.*` event naming who did it. Rebuilds and replays
are jobs: the route writes a requested row (with its event) and wakes a worker, which runs it
(workers/jobs.py); their progress is readable from any process while they run.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from datetime import datetime, timezone
from typing import Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from api.deps import ChronicleState, CommandRequest, chronicle, operator_context
from service_layer.operator_events import record_operator_action
from api.problems import Problem
from api.schemas_feed import GROUP
from api.schemas import (
    ExactRoute,
    DeadLetterList, DeadLetterOutcome, JobOut, JobRequestedOut, LogOut, ProjectionsOut, VerifyOut,
)
from infrastructure.log_status import read_log_status
from projections.dead_letters import GROUP_PREFIX, list_dead_letters, retry_dead_letters, skip_dead_letter
from projections.status import status
from projections.verify import verify
from projections import jobs
from projections.catalog import PROJECTORS
from workers import jobs as worker_jobs

router = APIRouter(prefix="/v1", tags=["operations"], route_class=ExactRoute)
logger = logging.getLogger("chronicle.api")
NAME = r"^[a-z][a-z0-9_]{0,63}$"


def _plain(value: Any) -> Any:
    data = asdict(value)
    return {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in data.items()}


def _known(name: str) -> str:
    if name not in PROJECTORS:
        raise Problem(404, "projection_not_found", f"no projection {name!r}; known: {', '.join(sorted(PROJECTORS))}",
                      field="name")
    return name


def _record(state: ChronicleState, ctx: CommandRequest, event_type: str, target: str, details: dict[str, Any]) -> int:
    result = record_operator_action(
        state.store, event_type, target, details, actor_id=ctx.actor_id, actor_type=ctx.actor_type,
        correlation_id=ctx.correlation_id,
    )
    return result.position


def wake(state: ChronicleState, name: str | None = None) -> None:
    """Ask the workers to catch up now (after a replay or a retry); ticks cover a lost ask."""
    waker = state.wake_projection
    if waker is None:
        return
    try:
        waker(name)
    except Exception:  # noqa: BLE001 - a wake-up is a hint; the periodic tick covers it
        logger.exception("wake-up after an operator action failed")


def _blockers(state: ChronicleState) -> list[dict[str, Any]]:
    """The open transactions holding the log back, furthest back first (see log_blockers())."""
    now = datetime.now(timezone.utc)
    return [
        {
            "pid": b.pid, "held_position": b.held_position,
            "xact_start": b.xact_start.isoformat() if b.xact_start else None,
            "held_for_seconds": round((now - b.xact_start).total_seconds(), 3) if b.xact_start else None,
            "state": b.state, "application_name": b.application_name,
            "query": (b.query or "")[:500] or None,
        }
        for b in state.store.blockers()
    ]


def _log(state: ChronicleState) -> dict[str, Any]:
    """The log's head, safe position and since when readers are held below the head."""
    with state.pool.connection() as conn:
        return read_log_status(conn).public()


@router.get("/log/blockers", summary="Open transactions holding the log back")
def log_blockers(state: ChronicleState = Depends(chronicle), _: Any = Depends(operator_context)) -> LogOut:
    """Readers (projections, ?min_position= waits) see the log only up to `safe_position`; each
    blocker is a session whose uncommitted append holds it there. End it, or wait for its
    idle_in_transaction_session_timeout, and the projections resume."""
    return {**_log(state), "blockers": _blockers(state)}


@router.get("/projections", summary="Status and lag of every projection and partition")
def projections_status(state: ChronicleState = Depends(chronicle), _: Any = Depends(operator_context)) -> ProjectionsOut:
    """Every partition's checkpoint, head, lag and state, each projection's latest rebuild and
    replay job, and the open transactions (if any) holding the log back."""
    partitions = [_plain(p) for p in status(state.pool)]
    rebuilds = {name: jobs.job_view(state.pool, projection=name) for name in PROJECTORS}
    replays = {name: jobs.job_view(state.pool, projection=name, kind="replay") for name in PROJECTORS}
    return {
        "projections": [
            {
                "name": name,
                "partitions": [p for p in partitions if p["projection"] == name],
                "lag_events": sum(p["lag_events"] for p in partitions if p["projection"] == name),
                "dead_letters": sum(p["dead_letters"] for p in partitions if p["projection"] == name),
                "rebuild": rebuilds[name],
                "replay": replays[name],
            }
            for name in PROJECTORS
        ],
        "log": {**_log(state), "blockers": _blockers(state)},
    }


class RebuildRequest(BaseModel):
    """Options of a rebuild: a new partition count, if any."""

    model_config = ConfigDict(extra="forbid")

    partitions: int | None = Field(None, ge=1, le=1024)


@router.post("/projections/{name}/rebuild", status_code=202, summary="Request a rebuild of a projection")
def start_rebuild(
    response: Response,
    name: str = Path(..., pattern=NAME),
    body: RebuildRequest | None = None,
    state: ChronicleState = Depends(chronicle),
    ctx: CommandRequest = Depends(operator_context),
) -> JobRequestedOut:
    """Queue a rebuild for a worker; follow it at GET .../rebuild (Location). 409 if one is
    already requested or running."""
    _known(name)
    options = {"partitions": body.partitions if body else None}
    return _request(response, state, ctx, "rebuild", name, options, f"/v1/projections/{name}/rebuild")


def _request(response: Response, state: ChronicleState, ctx: CommandRequest, kind: jobs.Kind, name: str,
             options: dict[str, Any], progress: str) -> dict[str, Any]:
    """Write the requested job with its operator event, wake a worker, answer 202 with Location."""
    try:
        requested = worker_jobs.request(
            state.store, kind, name, options, actor_id=ctx.actor_id, actor_type=ctx.actor_type,
            correlation_id=ctx.correlation_id, details={"requested_by_key": ctx.principal.key_id})
    except jobs.JobInProgress as exc:
        raise Problem(409, f"{kind}_in_progress", str(exc), field="name") from None
    waker = state.wake_job
    if waker is not None:
        try:
            waker(kind, name)
        except Exception:  # noqa: BLE001 - a wake-up is a hint; the workers' tick finds the job
            logger.exception("wake-up for the %s job of %s failed", kind, name)
    response.headers["Location"] = progress
    response.headers["X-Chronicle-Position"] = str(requested.position)
    return {"projection": name, "job_id": requested.job.id, "state": requested.job.state, **options,
            "position": requested.position, "progress": progress}


@router.get("/projections/{name}/rebuild", summary="The latest rebuild's progress")
def rebuild_status(
    name: str = Path(..., pattern=NAME),
    state: ChronicleState = Depends(chronicle),
    _: Any = Depends(operator_context),
) -> JobOut:
    """The latest rebuild: state (requested, running, done, failed, crashed), events done of
    total, rate, ETA, and its job (who asked, when, options); 404 if none."""
    _known(name)
    view = jobs.job_view(state.pool, projection=name)
    if view is None:
        raise Problem(404, "rebuild_not_found", f"projection {name!r} was never rebuilt", field="name")
    return view


@router.get("/projections/{name}/replay", summary="The latest replay job")
def replay_status(
    name: str = Path(..., pattern=NAME),
    state: ChronicleState = Depends(chronicle),
    _: Any = Depends(operator_context),
) -> JobOut:
    """The latest replay job: state, partitions moved, events to re-apply; 404 if none."""
    _known(name)
    view = jobs.job_view(state.pool, projection=name, kind="replay")
    if view is None:
        raise Problem(404, "replay_not_found", f"projection {name!r} was never replayed", field="name")
    return view


class ReplayRequest(BaseModel):
    """Where to replay from: every partition's checkpoint moves back to this position."""

    model_config = ConfigDict(extra="forbid")

    from_position: int = Field(ge=0)


@router.post("/projections/{name}/replay", status_code=202, summary="Request a replay of a projection")
def start_replay(
    body: ReplayRequest,
    response: Response,
    name: str = Path(..., pattern=NAME),
    state: ChronicleState = Depends(chronicle),
    ctx: CommandRequest = Depends(operator_context),
) -> JobRequestedOut:
    """Queue a replay: a worker moves the checkpoints back and wakes the partitions; follow it at
    GET .../replay (Location), the lag at GET /v1/projections. 409 if one is already queued."""
    _known(name)
    return _request(response, state, ctx, "replay", name, {"from_position": body.from_position},
                    f"/v1/projections/{name}/replay")


@router.get("/dead-letters", summary="Parked events")
def list_dead(
    state: ChronicleState = Depends(chronicle),
    _: Any = Depends(operator_context),
    projection: str | None = Query(None, pattern=NAME),
    group: str | None = Query(None, pattern=GROUP, description="a consumer group's parked events"),
    status: Literal["parked", "retried", "skipped"] = "parked",
    stream_id: str | None = Query(None, max_length=200),
    limit: int = Query(100, ge=1, le=1000),
) -> DeadLetterList:
    """Dead letters in log order, by projection (or consumer group), status and stream.

    A group's dead letters have the projection `group:<name>`; retry and skip them by id as any other."""
    if projection is not None:
        _known(projection)
    if group is not None:
        if projection is not None:
            raise Problem(422, "invalid_query", "give projection or group, not both", field="group")
        projection = GROUP_PREFIX + group
    rows = list_dead_letters(state.pool, projection, status=status, stream_id=stream_id, limit=limit)
    return {"dead_letters": [_plain(r) for r in rows]}


def _dead_letter(state: ChronicleState, dead_letter_id: int) -> dict[str, Any]:
    with state.pool.connection() as conn:
        row = conn.execute(
            "SELECT id, projection, stream_id, status FROM dead_letter WHERE id = %s AND NOT shadow", (dead_letter_id,)
        ).fetchone()
    if row is None:
        raise Problem(404, "dead_letter_not_found", f"no dead letter {dead_letter_id}", field="dead_letter_id")
    if row["status"] != "parked":
        raise Problem(409, "dead_letter_resolved", f"dead letter {dead_letter_id} is already {row['status']}",
                      field="dead_letter_id")
    return row


@router.post("/dead-letters/{dead_letter_id}/retry", summary="Retry a parked event and the rest of its stream")
def retry_dead(
    dead_letter_id: int = Path(..., ge=1),
    state: ChronicleState = Depends(chronicle),
    ctx: CommandRequest = Depends(operator_context),
) -> DeadLetterOutcome:
    """Re-apply the stream's parked events in order; those failing again stay parked."""
    row = _dead_letter(state, dead_letter_id)
    outcome = retry_dead_letters(state.pool, row["projection"], stream_id=row["stream_id"])
    position = _record(state, ctx, "operator.dead_letter_retried", f"dead_letter:{dead_letter_id}",
                       {"projection": row["projection"], "stream_id": row["stream_id"],
                        "resumed": outcome.resumed, "still_parked": outcome.still_parked})
    if row["projection"] in PROJECTORS:  # a consumer group's letters are fetched again, nothing to wake
        wake(state, row["projection"])
    return {"resumed": outcome.resumed, "still_parked": outcome.still_parked, "position": position}


@router.post("/dead-letters/{dead_letter_id}/skip", summary="Skip a parked event; its stream resumes")
def skip_dead(
    dead_letter_id: int = Path(..., ge=1),
    state: ChronicleState = Depends(chronicle),
    ctx: CommandRequest = Depends(operator_context),
) -> DeadLetterOutcome:
    """Never apply this event; the later parked events of its stream are retried in order."""
    row = _dead_letter(state, dead_letter_id)
    try:
        outcome = skip_dead_letter(state.pool, dead_letter_id)
    except KeyError:
        raise Problem(409, "dead_letter_resolved", f"dead letter {dead_letter_id} is no longer parked",
                      field="dead_letter_id") from None
    position = _record(state, ctx, "operator.dead_letter_skipped", f"dead_letter:{dead_letter_id}",
                       {"projection": row["projection"], "stream_id": row["stream_id"],
                        "resumed": outcome.resumed, "still_parked": outcome.still_parked})
    if row["projection"] in PROJECTORS:  # a consumer group's letters are fetched again, nothing to wake
        wake(state, row["projection"])
    return {"resumed": outcome.resumed, "still_parked": outcome.still_parked, "position": position}


@router.post("/projections/{name}/verify", summary="Compare a projection with a rebuild from the log")
def verify_projection(
    response: Response,
    name: str = Path(..., pattern=NAME),
    state: ChronicleState = Depends(chronicle),
    ctx: CommandRequest = Depends(operator_context),
) -> VerifyOut:
    """Rebuild the projection into scratch tables at the live checkpoints and compare row by row.

    Answers the number of differing rows and the first 100 (table, key, kind, columns); streams
    parked in a dead letter are left out. Nothing live is changed. The verify is recorded as an
    `operator.projection_verified` event, whose log position is the X-Chronicle-Position header.
    """
    _known(name)
    report = verify(state.pool, name).as_dict()
    position = _record(state, ctx, "operator.projection_verified", f"projection:{name}", report)
    response.headers["X-Chronicle-Position"] = str(position)
    return report
