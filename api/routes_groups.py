"""Consumer groups over HTTP: members join with a lease, fetch their partitions' events, ack, nack.

Delivery is at least once: what a member has not acked is delivered again, to it or to the
partition's next owner. Parked events (nack) are dead letters of the projection
`group:<name>`, listed, retried and skipped with the routes operators use for projections'.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

import anyio
from fastapi import APIRouter, Depends, Path, Query, Request, Response
from pydantic_core import from_json

from api.commanding import CommandRequest, operator_context
from api.deps import ChronicleState, Operator, Subscriber, chronicle
from api.problems import Problem
from api.routes_log import archived_problem
from api.schemas import ExactRoute
from api.schemas_feed import (
    GROUP, AckOut, GroupEventsOut, GroupOut, GroupsOut, JoinIn, MemberOut, NackIn, NackOut, PositionIn, SeekIn, SeekOut,
)
from infrastructure.log_listener import listener_of
from infrastructure.log_segments import ArchivedRange
from service_layer import group_delivery, groups
from service_layer.group_seek import seek_group

router = APIRouter(prefix="/v1/groups", tags=["consumer groups"], route_class=ExactRoute)
T = TypeVar("T")
GroupName = Path(..., pattern=GROUP, description="the group's name")
MemberId = Path(..., pattern=r"^[0-9a-f-]{36}$", description="the member id its join answered")
GONE = {404: {"description": "Not Found: `group_not_found`, `member_not_found`"},
        410: {"description": "Gone: `member_expired` (the lease ran out; join again)"}}
# A fetch may also meet an archived range below the group's checkpoints.
FETCH_GONE = {**GONE, 410: {"description": "Gone: `member_expired` (the lease ran out; join again), or"
                                           " `log_archived` (the group's checkpoints lie below an archived"
                                           " range, which the problem names)"}}


async def _run(fn: Callable[..., T], *args: Any) -> T:
    """Run a group operation in a worker thread; its refusals become problem+json."""
    try:
        return await anyio.to_thread.run_sync(fn, *args)
    except groups.GroupError as exc:
        raise Problem(exc.status, exc.code, exc.detail, field=exc.field) from None


@router.post("/{group}/members", status_code=201, summary="Join a consumer group")
async def join(request: Request, response: Response, body: JoinIn | None = None, group: str = GroupName,
               state: ChronicleState = Depends(chronicle), _: Any = Subscriber) -> MemberOut:
    """Join (the group is created on its first join) with a lease; heartbeat before it runs out.

    The answer names the partitions the member owns now; they change as members join and leave."""
    lease = (body.lease_seconds if body else None) or state.settings.chronicle_group_lease_seconds
    member = await _run(groups.join, state.pool, group, body.name if body else None, lease,
                        request.state.principal.key_id, state.settings.chronicle_group_partitions)
    response.headers["Location"] = f"/v1/groups/{group}/members/{member.member_id}"
    return member.public()


@router.post("/{group}/members/{member_id}/heartbeat", summary="Keep a member's lease", responses=GONE)
async def heartbeat(group: str = GroupName, member_id: str = MemberId, state: ChronicleState = Depends(chronicle),
                    _: Any = Subscriber) -> MemberOut:
    """Renew the lease; the answer names the partitions the member owns now. 410 once it expired."""
    return (await _run(groups.heartbeat, state.pool, group, member_id)).public()


@router.delete("/{group}/members/{member_id}", status_code=204, summary="Leave a consumer group",
               responses={404: GONE[404]})
async def leave(group: str = GroupName, member_id: str = MemberId, state: ChronicleState = Depends(chronicle),
                _: Any = Subscriber) -> Response:
    """Leave; the member's partitions go to the others at once (their unacked events are delivered again)."""
    await _run(groups.leave, state.pool, group, member_id)
    return Response(status_code=204)


@router.get("/{group}/members/{member_id}/events", summary="Fetch a member's events", responses=FETCH_GONE)
async def events(
    group: str = GroupName, member_id: str = MemberId, state: ChronicleState = Depends(chronicle),
    _: Any = Subscriber,
    limit: int = Query(100, ge=1, le=1000, description="at most this many events"),
    wait: float = Query(0, ge=0, le=60, description="seconds to wait for events when there are none"),
) -> GroupEventsOut:
    """Events of the member's partitions after their checkpoints, up to the safe position: queued
    redeliveries first, then the log in position order (each stream's events in order).

    Not acked, they are delivered again. After a nack, skip the rest of that stream's events in
    this answer: they are parked with it. `position`: read up to here; ack it."""
    listener = listener_of(state)
    deadline = time.monotonic() + wait
    while True:
        seen = listener.generation
        try:
            delivery = await _run(group_delivery.fetch, state.pool, group, member_id, limit)
        except ArchivedRange as exc:  # 410 naming the archive the group's checkpoints lie below
            raise archived_problem(exc, "group") from None
        remaining = deadline - time.monotonic()
        if delivery.events or remaining <= 0:
            break
        await listener.wait(seen, remaining)
    return {"events": [{**from_json(e.json), "partition": p} for e, p in delivery.events],
            "partitions": delivery.partitions, "position": delivery.position}


@router.post("/{group}/members/{member_id}/ack", summary="Acknowledge events up to a position", responses=GONE)
async def ack(body: PositionIn, group: str = GroupName, member_id: str = MemberId,
              state: ChronicleState = Depends(chronicle), _: Any = Subscriber) -> AckOut:
    """Everything delivered to this member up to `position` is done: each of its partitions'
    checkpoints moves there (never past what was delivered). The checkpoints after it."""
    checkpoints = await _run(group_delivery.ack, state.pool, group, member_id, body.position)
    return {"group": group, "member_id": member_id, "checkpoints": checkpoints}


@router.post("/{group}/members/{member_id}/nack", summary="Park a failed event and the rest of its stream",
             responses=GONE)
async def nack(body: NackIn, group: str = GroupName, member_id: str = MemberId,
               state: ChronicleState = Depends(chronicle), _: Any = Subscriber) -> NackOut:
    """Park the event at `position` with the error, and its stream's later events with it, as dead
    letters of `group:<group>`: GET /v1/dead-letters?group=, then POST /v1/dead-letters/{id}/retry
    (delivered again, in order) or .../skip. 409 `not_delivered`, `partition_not_owned`."""
    parked = await _run(group_delivery.nack, state.pool, group, member_id, body.position, body.error)
    return {"group": group, "member_id": member_id, "parked": parked}


@router.get("", summary="Every consumer group: members, partitions, checkpoints, lag")
async def list_groups(state: ChronicleState = Depends(chronicle), _: Any = Operator) -> GroupsOut:
    """Each group's members (alive or expired), its partitions with owner, checkpoint and lag
    behind the safe position, and its parked events."""
    safe, found = await _run(groups.group_status, state.pool, None)
    return {"groups": found, "safe_position": safe}


@router.get("/{group}", summary="One consumer group's status", responses={404: GONE[404]})
async def get_group(group: str = GroupName, state: ChronicleState = Depends(chronicle), _: Any = Operator) -> GroupOut:
    """The group's members, partitions with owner, checkpoint and lag, and its parked events."""
    _, found = await _run(groups.group_status, state.pool, group)
    return found[0]


@router.post("/{group}/seek", summary="Move a consumer group's checkpoints",
             responses={404: GONE[404], 422: {"description": "`position_not_reached` (past the safe position),"
                                                            " `position_archived` (in or before an archived range)"}})
async def seek(body: SeekIn, group: str = GroupName, state: ChronicleState = Depends(chronicle),
               ctx: CommandRequest = Depends(operator_context)) -> SeekOut:
    """Set every partition's checkpoint to `position` (recorded as `operator.group_moved`): past an
    archived range the group's consumers do not need (its fetch answers 410 until then), or back
    to deliver again. Refused in or before an archived range, and past the safe position."""
    return await _run(lambda: seek_group(state.pool, state.store, group, body.position, actor_id=ctx.actor_id,
                                         actor_type=ctx.actor_type, correlation_id=ctx.correlation_id))
