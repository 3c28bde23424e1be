"""The operators' routes: projection status, rebuild, replay and verify, dead letters.

Each action is recorded as an `operator.*` event naming who did it. Rebuilds and replays
are jobs: the route writes a requested row (with its event) and wakes a worker, which runs it
(workers/jobs.py); their progress is readable from any process while they run. The work is
in service_layer/operations.py, which the console calls too.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from api.commanding import CommandRequest, operator_context
from api.deps import ChronicleState, chronicle
from api.problems import Problem
from api.schemas_feed import GROUP
from api.schemas import (
    ExactRoute,
    DeadLetterList, DeadLetterOutcome, JobOut, JobRequestedOut, LogOut, ProjectionsOut, VerifyOut,
)
from projections.dead_letters import GROUP_PREFIX, list_dead_letters
from service_layer import operations
from service_layer.operations import Operator, known_projection, plain

router = APIRouter(prefix="/v1", tags=["operations"], route_class=ExactRoute)
NAME = r"^[a-z][a-z0-9_]{0,63}$"


def _who(ctx: CommandRequest) -> Operator:
    return Operator(ctx.principal, ctx.correlation_id)


@router.get("/log/blockers", summary="Open transactions holding the log back")
def log_blockers(state: ChronicleState = Depends(chronicle), _: Any = Depends(operator_context)) -> LogOut:
    """Readers (projections, ?min_position= waits) see the log only up to `safe_position`; each
    blocker is a session whose uncommitted append holds it there. End it, or wait for its
    idle_in_transaction_session_timeout, and the projections resume."""
    return operations.log_view(state.pool, state.store)


@router.get("/projections", summary="Status and lag of every projection and partition")
def projections_status(state: ChronicleState = Depends(chronicle), _: Any = Depends(operator_context)) -> ProjectionsOut:
    """Every partition's checkpoint, head, lag and state, each projection's latest rebuild and
    replay job, and the open transactions (if any) holding the log back."""
    return operations.projections_view(state.pool, state.store)


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
    options = {"partitions": body.partitions if body else None}
    return _request(response, state, ctx, "rebuild", name, options)


def _request(response: Response, state: ChronicleState, ctx: CommandRequest, kind: Literal["rebuild", "replay"],
             name: str, options: dict[str, Any]) -> dict[str, Any]:
    """Write the requested job with its operator event, wake a worker, answer 202 with Location."""
    requested = operations.request_job(state.store, state.wake_job, _who(ctx), kind, name, options)
    progress = f"/v1/projections/{name}/{kind}"
    response.headers["Location"] = progress
    response.headers["X-Chronicle-Position"] = str(requested["position"])
    return {**requested, "progress": progress}


def _job_status_route(kind: Literal["rebuild", "replay"], summary: str, description: str) -> None:
    """Add the route GET /projections/{name}/<kind>: the latest job of that kind and its progress."""

    def job_status(
        name: str = Path(..., pattern=NAME),
        state: ChronicleState = Depends(chronicle),
        _: Any = Depends(operator_context),
    ) -> JobOut:
        return operations.job_progress(state.pool, kind, name)

    job_status.__name__ = job_status.__qualname__ = f"{kind}_status"  # the operation id names the kind
    job_status.__doc__ = description
    router.get(f"/projections/{{name}}/{kind}", summary=summary)(job_status)


_job_status_route("rebuild", "The latest rebuild's progress",
                  "The latest rebuild: state (requested, running, done, failed, crashed), events done of\n"
                  "total, rate, ETA, and its job (who asked, when, options); 404 if none.")
_job_status_route("replay", "The latest replay job",
                  "The latest replay job: state, partitions moved, events to re-apply; 404 if none.")


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
    return _request(response, state, ctx, "replay", name, {"from_position": body.from_position})


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
        known_projection(projection)
    if group is not None:
        if projection is not None:
            raise Problem(422, "invalid_query", "give projection or group, not both", field="group")
        projection = GROUP_PREFIX + group
    rows = list_dead_letters(state.pool, projection, status=status, stream_id=stream_id, limit=limit)
    return {"dead_letters": [plain(r) for r in rows]}


def _resolve_route(action: str, summary: str, description: str) -> None:
    """Add the route POST /dead-letters/{id}/<action>: resolve a parked event (`retry` or `skip`)."""

    def resolve(
        dead_letter_id: int = Path(..., ge=1),
        state: ChronicleState = Depends(chronicle),
        ctx: CommandRequest = Depends(operator_context),
    ) -> DeadLetterOutcome:
        return operations.resolve_dead_letter(state.pool, state.store, state.wake_projection, _who(ctx),
                                              dead_letter_id, action)

    resolve.__name__ = resolve.__qualname__ = f"{action}_dead"  # the operation id names the action
    resolve.__doc__ = description
    router.post(f"/dead-letters/{{dead_letter_id}}/{action}", summary=summary)(resolve)


_resolve_route("retry", "Retry a parked event and the rest of its stream",
               "Re-apply the stream's parked events in order; those failing again stay parked.")
_resolve_route("skip", "Skip a parked event; its stream resumes",
               "Never apply this event; the later parked events of its stream are retried in order.")


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
    report, position = operations.verify_recorded(state.pool, state.store, _who(ctx), name)
    response.headers["X-Chronicle-Position"] = str(position)
    return report
