"""The data subjects' route: forget a person (crypto-shredding), for the admin role."""

from __future__ import annotations

import logging
from typing import Any
from uuid import UUID

from fastapi import APIRouter, Depends, Path, Response
from pydantic import BaseModel, Field

from api.deps import Admin, ChronicleState, chronicle
from api.problems import Problem
from api.schemas import ExactRoute
from domain.bounds import MAX_CONTEXT_ID_CHARS
from service_layer.erasure import forget_subject
from service_layer.keys import ApiKey
from workers import jobs as worker_jobs

router = APIRouter(prefix="/v1", tags=["subjects"], route_class=ExactRoute)
logger = logging.getLogger("chronicle.api")
SUBJECT = rf"^[A-Za-z0-9][A-Za-z0-9._:@/+=-]{{0,{MAX_CONTEXT_ID_CHARS - 1}}}$"


class ForgottenOut(BaseModel):
    """What forgetting a subject did: its key, its streams, the purged copies, the rebuilds queued."""

    subject_id: str
    key_destroyed: bool = Field(description="false: the subject had no live key (never seen, or forgotten before)")
    streams: list[str] = Field(description="streams holding the subject's personal fields, now erased")
    snapshots_deleted: int
    responses_deleted: int = Field(description="stored Idempotency-Key responses of those streams")
    position: int = Field(description="log position of the subject.forgotten event")
    rebuilds: dict[str, int | None] = Field(description="rebuild job id per projection, to follow at"
                                                        " GET /v1/projections/{name}/rebuild")


def rebuild_requester(state: ChronicleState, principal: ApiKey, correlation_id: str | None) -> Any:
    """A function queueing a projection's rebuild (or finding the one queued) and waking a worker."""

    def request(name: str) -> int | None:
        job_id, new = worker_jobs.request_rebuild_after_erasure(
            state.store, name, actor_id=principal.actor_id, actor_type=principal.actor_type,
            correlation_id=correlation_id)
        if new and state.wake_job is not None:
            try:
                state.wake_job("rebuild", name)
            except Exception:  # noqa: BLE001 - a wake-up is a hint; the workers' tick finds the job
                logger.exception("wake-up for the rebuild of %s failed", name)
        return job_id

    return request


@router.delete("/subjects/{subject_id}", status_code=200, summary="Forget a data subject (erase its personal fields)")
def forget(
    response: Response,
    subject_id: str = Path(..., pattern=SUBJECT, description="the subject id events were written for"),
    state: ChronicleState = Depends(chronicle),
    principal: ApiKey = Admin,
) -> ForgottenOut:
    """Destroy the subject's data key, so its personal fields read as `[erased]` (JSON bodies
    as `{"erased": true}`) everywhere; purge its streams' aggregate snapshots and stored
    Idempotency-Key responses; record `subject.forgotten`; queue rebuilds of the read models.
    Forgetting again is allowed (nothing left to destroy: `key_destroyed` false)."""
    if state.service is None:
        raise Problem(503, "service_unavailable", "the workspace service is not available")
    repository = state.service.repository
    done = forget_subject(
        state.store, subject_id, actor_id=principal.actor_id, actor_type=principal.actor_type,
        request_rebuild=rebuild_requester(state, principal, None),
        evict=lambda streams: repository.evict(_ids(streams)),
    )
    response.headers["X-Chronicle-Position"] = str(done.position)
    return {**done.__dict__}


def _ids(streams: list[str]) -> list[UUID]:
    """The aggregate ids among stream ids (the cache is keyed by UUID)."""
    ids = []
    for stream in streams:
        try:
            ids.append(UUID(stream))
        except ValueError:
            continue
    return ids
