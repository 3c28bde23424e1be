"""Health, readiness, and the admins' key routes."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Response
from pydantic import BaseModel, ConfigDict, Field

from api.deps import Admin, ChronicleState, chronicle
from service_layer import operations
from service_layer.keys import ApiKey, list_keys
from service_layer.operations import Operator
from api.problems import problem_response
from api.schemas import ExactRoute, HealthOut, KeyList, KeyOut, NewKeyOut, ReadyOut
from infrastructure.log_status import LogStatus, read_log_status
from infrastructure.migrations import available_migrations

router = APIRouter(tags=["system"], route_class=ExactRoute)


@router.get("/healthz", summary="Liveness: the process answers")
def healthz() -> HealthOut:
    """Always ok while the process serves requests; it checks nothing else."""
    return {"status": "ok"}


@router.get("/readyz", summary="Readiness: PostgreSQL, migrations, broker, the log not held back", response_model=ReadyOut,
            responses={503: {"description": "not ready: the failing checks"}})
def readyz(state: ChronicleState = Depends(chronicle)) -> Any:
    """Ready when PostgreSQL answers, every migration is applied, the broker answers, and readers
    have not been held below the log's head (by an open append) for longer than
    CHRONICLE_LOG_HELD_BACK_LIMIT_SECONDS.

    A deliberately absent broker (in-process workers) counts as ready. 503 otherwise.
    """
    checks: dict[str, dict[str, Any]] = {}
    try:
        with state.pool.connection(timeout=2) as conn:
            conn.execute("SELECT 1")
            done = {r["number"] for r in conn.execute("SELECT number FROM schema_migrations").fetchall()}
            pending = [m.name for m in available_migrations() if m.number not in done]
            checks["postgres"] = {"ok": True}
            checks["migrations"] = {"ok": not pending, "pending": pending}
            if not pending:
                checks["log"] = _log_check(state, read_log_status(conn))
    except Exception as exc:  # noqa: BLE001 - readiness reports, it does not raise
        checks["postgres"] = {"ok": False, "error": type(exc).__name__}
        checks["migrations"] = {"ok": False, "error": "postgres unreachable"}
    checks["broker"] = _broker_check(state)
    ready = all(check["ok"] for check in checks.values())
    if not ready:
        failing = "; ".join(check.get("detail", name) for name, check in checks.items() if not check["ok"])
        return problem_response(503, "not_ready", f"not ready: {failing}", None, checks=checks)
    return {"status": "ready", "checks": checks}


def _log_check(state: ChronicleState, log: LogStatus) -> dict[str, Any]:
    """Not ok once readers have been held below the head longer than the configured limit.

    An append left open holds every projection and ?min_position= read back; this makes the
    outage visible to whatever watches readiness, naming since when (see GET /v1/log/blockers).
    """
    limit = state.settings.chronicle_log_held_back_limit_seconds
    held = log.held_back_seconds
    check: dict[str, Any] = {"ok": held <= limit, **log.public(), "limit_seconds": limit}
    if held > limit:
        check["detail"] = (
            f"the log has been held back at position {log.safe} (head {log.head}) since "
            f"{log.held_back_since.isoformat() if log.held_back_since else '?'} by an open append: "
            "see GET /v1/log/blockers"
        )
    return check


def _broker_check(state: ChronicleState) -> dict[str, Any]:
    if not state.settings.redis_url:
        return {"ok": True, "kind": state.broker, "detail": "no REDIS_URL: workers run in-process or not at all"}
    try:
        import redis

        client = redis.Redis.from_url(state.settings.redis_url, socket_timeout=1, socket_connect_timeout=1)
        client.ping()
        client.close()
        return {"ok": True, "kind": "redis"}
    except Exception as exc:  # noqa: BLE001
        return {"ok": False, "kind": "redis", "error": type(exc).__name__}


class KeyRequest(BaseModel):
    """A key to create: its name, role, and the actor its commands are recorded as."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100)
    role: Literal["writer", "reader", "auditor", "operator", "admin"]
    actor_id: str | None = Field(None, min_length=1, max_length=100)
    actor_type: Literal["user", "agent", "service", "system"] = "service"


@router.post("/v1/keys", status_code=201, tags=["keys"], summary="Create an API key (the secret is shown once)")
def post_key(body: KeyRequest, response: Response, state: ChronicleState = Depends(chronicle),
             principal: ApiKey = Admin) -> NewKeyOut:
    """Create a key; the response holds its secret token, which is never shown again."""
    key, token = operations.create_key_recorded(state.pool, state.store, Operator(principal), body.name, body.role,
                                                body.actor_id, body.actor_type)
    response.headers["Location"] = f"/v1/keys/{key.key_id}"
    # The token is never stored, not even as an Idempotency-Key response.
    response.headers["Cache-Control"] = "no-store"
    return {**key.public(), "token": token}


@router.get("/v1/keys", tags=["keys"], summary="List API keys")
def get_keys(state: ChronicleState = Depends(chronicle), _: ApiKey = Admin) -> KeyList:
    """Every key, oldest first, without secrets."""
    return {"keys": [key.public() for key in list_keys(state.pool)]}


@router.delete("/v1/keys/{key_id}", tags=["keys"], summary="Revoke an API key")
def delete_key(key_id: str, state: ChronicleState = Depends(chronicle), principal: ApiKey = Admin) -> KeyOut:
    """Revoke a key; its next request to this server process gets 401 (other processes: within
    CHRONICLE_API_KEY_CACHE_SECONDS). Unknown key: 404."""
    key = operations.revoke_key_recorded(state.pool, state.store, Operator(principal), key_id)
    state.keys.forget(key.key_id)  # this process refuses it at once; others within the cache's TTL
    return key.public()
