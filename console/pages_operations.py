"""The operators' pages: projections (rebuild, replay, verify, with live progress), dead letters
(retry, skip), and the admins' keys (create, list, revoke).

Each action calls the function the API's route calls (service_layer/operations.py), so it records
the same `operator.*` event, attributed to the signed-in key's actor. Forms post and redirect
back (303), so they work without JavaScript; htmx polls the progress bars.
"""

from __future__ import annotations

import uuid
from typing import Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from api.problems import Problem
from console.auth import Viewer
from console.web import form_of, need, page, state_of
from projections.dead_letters import list_dead_letters
from service_layer import event_log, operations
from service_layer.keys import ROLES, list_keys
from service_layer.operations import Operator, known_projection

router = APIRouter()
NAME = r"^[a-z][a-z0-9_]{0,63}$"


def _who(seen: Viewer) -> Operator:
    return Operator(seen.key, str(uuid.uuid4()))


def _int(form: dict[str, str], name: str, low: int, high: int) -> int | None:
    """An optional whole number from a form field, within [low, high]; else a 422 page."""
    text = form.get(name, "").strip()
    if not text:
        return None
    if not text.isdigit() or not low <= int(text) <= high:
        raise Problem(422, "invalid_form", f"{name}: a whole number from {low} to {high}")
    return int(text)


def _progress(view: dict[str, Any] | None) -> dict[str, Any] | None:
    """A job's progress as a percentage (100 once done), with its rate and ETA."""
    if view is None:
        return None
    total, done = view.get("total") or 0, view.get("done") or 0
    percent = 100 if view.get("state") == "done" else (min(99, int(done * 100 / total)) if total else 0)
    return {**view, "percent": percent}


def _projections(request: Request) -> dict[str, Any]:
    state = state_of(request)
    view = operations.projections_view(state.pool, state.store)
    for projection in view["projections"]:
        projection["rebuild"] = _progress(projection["rebuild"])
        projection["replay"] = _progress(projection["replay"])
    return view


@router.get("/projections", response_class=HTMLResponse)
def projections(request: Request, _: Viewer = Depends(need("operate")),
                verified: str | None = Query(None, pattern=NAME)) -> HTMLResponse:
    """Every projection's partitions, jobs and actions."""
    return page(request, "projections.html", **_projections(request), verified=verified)


@router.get("/projections/live", response_class=HTMLResponse)
def projections_live(request: Request, _: Viewer = Depends(need("operate"))) -> HTMLResponse:
    """The projections table alone, for htmx to swap in while jobs run."""
    return page(request, "projections_live.html", **_projections(request))


@router.post("/projections/{name}/{action}", response_class=HTMLResponse)
async def projection_action(request: Request, name: str = Path(..., pattern=NAME),
                            action: Literal["rebuild", "replay", "verify"] = Path(...),
                            seen: Viewer = Depends(need("operate"))) -> Response:
    """Request a rebuild or a replay (a job a worker runs), or verify now and show the report."""
    form = await form_of(request, seen.csrf_token)
    known_projection(name)
    state = state_of(request)
    if action == "verify":
        report, position = operations.verify_recorded(state.pool, state.store, _who(seen), name)
        return page(request, "verified.html", name=name, report=report, position=position)
    if action == "rebuild":
        options: dict[str, Any] = {"partitions": _int(form, "partitions", 1, 1024)}
    else:
        position = _int(form, "from_position", 0, 2**62)
        options = {"from_position": position or 0}
    operations.request_job(state.store, state.wake_job, _who(seen), action, name, options)
    return RedirectResponse(f"/console/projections#{name}", 303)


@router.get("/dead-letters", response_class=HTMLResponse)
def dead_letters(request: Request, _: Viewer = Depends(need("operate")),
                 projection: str | None = Query(None, pattern=NAME),
                 status: Literal["parked", "retried", "skipped"] = "parked") -> HTMLResponse:
    """Parked events with their error and the parked stream's events, to retry or skip."""
    if projection:
        known_projection(projection)
    pool = state_of(request).pool
    letters = list_dead_letters(pool, projection or None, status=status, limit=100)
    streams = {letter.stream_id: event_log.stream_events(pool, letter.stream_id, 0, None, 50)[:50]
               for letter in letters}
    return page(request, "dead_letters.html", letters=letters, streams=streams, status=status, projection=projection)


@router.post("/dead-letters/{dead_letter_id}/{action}", response_class=HTMLResponse)
async def dead_letter_action(request: Request, dead_letter_id: int = Path(..., ge=1, le=2**62),
                             action: Literal["retry", "skip"] = Path(...),
                             seen: Viewer = Depends(need("operate"))) -> Response:
    """Retry the stream's parked events, or skip this one; the outcome shows on the next page."""
    await form_of(request, seen.csrf_token)
    state = state_of(request)
    outcome = operations.resolve_dead_letter(state.pool, state.store, state.wake_projection, _who(seen),
                                             dead_letter_id, action)
    return page(request, "dead_letter_done.html", action=action, dead_letter_id=dead_letter_id, outcome=outcome)


@router.get("/keys", response_class=HTMLResponse)
def keys(request: Request, _: Viewer = Depends(need("keys"))) -> HTMLResponse:
    """Every key (admins only), with forms to create and revoke."""
    return page(request, "keys.html", keys=list_keys(state_of(request).pool), roles=ROLES, created=None)


@router.post("/keys", response_class=HTMLResponse)
async def create(request: Request, seen: Viewer = Depends(need("keys"))) -> HTMLResponse:
    """Create a key; its token is on this page once and never again."""
    form = await form_of(request, seen.csrf_token)
    state = state_of(request)
    actor_type = form.get("actor_type") or "service"
    key, token = operations.create_key_recorded(state.pool, state.store, _who(seen), form.get("name", "")[:200],
                                                form.get("role", "")[:50], form.get("actor_id") or None,
                                                actor_type[:50])
    response = page(request, "keys.html", 201, keys=list_keys(state.pool), roles=ROLES, created=(key, token))
    return response


@router.post("/keys/{key_id}/revoke", response_class=HTMLResponse)
async def revoke(request: Request, key_id: str = Path(..., max_length=50),
                 seen: Viewer = Depends(need("keys"))) -> Response:
    """Revoke a key at once: its API requests and console sessions end."""
    await form_of(request, seen.csrf_token)
    state = state_of(request)
    key = operations.revoke_key_recorded(state.pool, state.store, _who(seen), key_id)
    state.keys.forget(key.key_id)  # the API in this process refuses it at once, as DELETE /v1/keys does
    return RedirectResponse("/console/keys", 303)
