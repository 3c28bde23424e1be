"""What every route shares: Chronicle's state, the caller's key and role, versions, metadata.

Routes stay thin: they take these as FastAPI dependencies and call the services.
"""

from __future__ import annotations

import base64
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import Depends, Header, Query, Request
from psycopg_pool import ConnectionPool
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from service_layer.keys import ApiKey
from api.problems import Problem
from projections.status import projected_position
from domain.bounds import MAX_CONTEXT_ID_CHARS
from infrastructure.config import Settings
from infrastructure.event_store import EventStore
from infrastructure.log_status import read_log_status


class ApiSettings(BaseSettings):
    """The HTTP API's own limits, from the environment (CHRONICLE_API_*)."""

    model_config = SettingsConfigDict(env_prefix="CHRONICLE_API_", extra="ignore")

    max_body_bytes: int = Field(default=1_179_648, ge=1024)
    default_page_size: int = Field(default=50, ge=1)
    max_page_size: int = Field(default=500, ge=1)
    # How long a read with ?min_position= waits for the projections, at most.
    min_position_wait_ms: int = Field(default=5_000, ge=0, le=60_000)


API_SETTINGS = ApiSettings()
# Log positions are PostgreSQL bigints: a larger number is refused, never sent to SQL as numeric.
MAX_POSITION = 2**63 - 1
MAX_PAGE = API_SETTINGS.max_page_size


@dataclass
class ChronicleState:
    """Everything the routes use: settings, the pool, the store and the services once wired."""

    settings: Settings
    api_settings: ApiSettings
    database_url: str
    pool: ConnectionPool
    store: EventStore
    broker: str = "absent"  # "redis", "in-process", or "absent"
    service: Any = None  # the application service (service_layer.workspace.Workspace), once bootstrapped
    wake_projection: Callable[[str | None], None] | None = None  # None: no worker listens
    wake_job: Callable[[str, str], None] | None = None
    log_listener: Any = None  # infrastructure.log_listener.LogListener, started by the first feed


def chronicle(request: Request) -> ChronicleState:
    """The running app's ChronicleState."""
    return request.app.state.chronicle


def require(permission: str) -> Callable[..., ApiKey]:
    """A dependency that admits only keys whose role holds `permission`.

    No key, a malformed, unknown or revoked key: 401. A live key outside its role: 403.
    """

    def check(request: Request) -> ApiKey:
        principal: ApiKey | None = getattr(request.state, "principal", None)
        if principal is None:
            reason = getattr(request.state, "auth_problem", "missing")
            detail = {
                "missing": "this route needs an API key: Authorization: Bearer <key>",
                "malformed": "the Authorization header must be 'Bearer <key>'",
            }.get(reason, "this API key is unknown or revoked")
            raise Problem(401, "unauthorized", detail, field="Authorization",
                          headers={"WWW-Authenticate": 'Bearer realm="chronicle"'})
        if not principal.allows(permission):
            raise Problem(
                403, "forbidden",
                f"a {principal.role} key may not do this (it needs the {permission} permission)",
                field="Authorization", role=principal.role, permission=permission,
            )
        return principal

    check.__name__ = f"require_{permission}"
    return check


Reader = Depends(require("read"))
Writer = Depends(require("write"))
Auditor = Depends(require("audit"))
Operator = Depends(require("operate"))
Admin = Depends(require("keys"))
Subscriber = Depends(require("subscribe"))
Describer = Depends(require("describe"))


def page_size(
    limit: int = Query(API_SETTINGS.default_page_size, ge=1, le=MAX_PAGE, description="page size"),
) -> int:
    """The page size asked for, bounded by CHRONICLE_API_MAX_PAGE_SIZE."""
    return limit


_ETAG = re.compile(r'^\s*"?(\d{1,18})"?\s*$')


def if_match(if_match: str | None = Header(None, alias="If-Match")) -> int | None:
    """The version an If-Match header names (the stream's ETag), or None without one.

    `*` means "any version" and is the same as no header; anything else malformed is 422.
    If-Match compares strongly (RFC 9110 13.1.1): a weak ETag (W/"3") never matches, so 412.
    """
    if if_match is None or if_match.strip() == "*":
        return None
    if if_match.strip().startswith("W/"):
        raise Problem(412, "precondition_failed",
                      'a weak ETag never matches If-Match; send the strong ETag, e.g. "3"', field="If-Match")
    match = _ETAG.match(if_match)
    if not match:
        raise Problem(422, "invalid_if_match", 'If-Match must be a stream version ETag such as "3"', field="If-Match")
    return int(match.group(1))


def etag(version: int) -> str:
    """The ETag of a stream at `version`."""
    return f'"{version}"'


# Session, correlation and causation ids land in event metadata (btree expression indexes) and
# snapshot rows: at most domain.bounds.MAX_CONTEXT_ID_CHARS characters.
_HEADER_ID = re.compile(rf"^[A-Za-z0-9][A-Za-z0-9._:@/+=-]{{0,{MAX_CONTEXT_ID_CHARS - 1}}}$")


def _header_id(value: str | None, name: str) -> str | None:
    if value is None:
        return None
    if not _HEADER_ID.match(value):
        raise Problem(422, "invalid_header", f"{name} must be 1-{MAX_CONTEXT_ID_CHARS} letters, digits or ._:@/+=-",
                      field=name)
    return value


@dataclass(frozen=True)
class CommandRequest:
    """A command as the HTTP API received it: its key, sender, session, correlation and causation
    (the event metadata), and its If-Match."""

    principal: ApiKey
    actor_id: str
    actor_type: str
    session_id: str | None
    correlation_id: str
    causation_id: str | None
    expected_version: int | None

    def metadata(self) -> dict[str, Any]:
        """The metadata every event of this command carries."""
        data = {
            "actor_id": self.actor_id,
            "actor_type": self.actor_type,
            "session_id": self.session_id,
            "correlation_id": self.correlation_id,
            "causation_id": self.causation_id,
            "api_key_id": self.principal.key_id,
        }
        return {k: v for k, v in data.items() if v is not None}


def command_context(
    principal: ApiKey = Writer,
    session_id: str | None = Header(None, alias="X-Session-Id"),
    correlation_id: str | None = Header(None, alias="X-Correlation-Id"),
    causation_id: str | None = Header(None, alias="X-Causation-Id"),
    expected_version: int | None = Depends(if_match),
) -> CommandRequest:
    """A writer's command context: the key's actor, the session headers and If-Match.

    A missing correlation id gets a fresh one, so every command's events share one.
    """
    return CommandRequest(
        principal=principal,
        actor_id=principal.actor_id,
        actor_type=principal.actor_type,
        session_id=_header_id(session_id, "X-Session-Id"),
        correlation_id=_header_id(correlation_id, "X-Correlation-Id") or str(uuid.uuid4()),
        causation_id=_header_id(causation_id, "X-Causation-Id"),
        expected_version=expected_version,
    )


def operator_context(
    principal: ApiKey = Operator,
    correlation_id: str | None = Header(None, alias="X-Correlation-Id"),
) -> CommandRequest:
    """An operator's context, for the events that record operator actions."""
    return CommandRequest(
        principal=principal, actor_id=principal.actor_id, actor_type=principal.actor_type,
        session_id=None, correlation_id=_header_id(correlation_id, "X-Correlation-Id") or str(uuid.uuid4()),
        causation_id=None, expected_version=None,
    )


def page_of(rows: list[dict[str, Any]], limit: int, *key: str) -> tuple[list[dict[str, Any]], str | None]:
    """The first `limit` of `limit + 1` fetched rows, and the cursor after them (None on the last page).

    Routes fetch one row more than a page so they know whether another page follows.
    """
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (encode_cursor(*(rows[-1][k] for k in key)) if more and rows else None)


def encode_cursor(*parts: Any) -> str:
    """An opaque keyset cursor from the sort key of the last row of a page."""
    text = "\x1f".join(str(p) for p in parts)
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None, kinds: tuple[type, ...]) -> tuple[Any, ...] | None:
    """The sort key a cursor holds, typed; a cursor that is not one of ours is 422."""
    if cursor is None:
        return None
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        # validate=True: characters outside the alphabet are an error, not silently dropped.
        parts = base64.b64decode(padded.encode(), altchars=b"-_", validate=True).decode().split("\x1f")
        if len(parts) != len(kinds):
            raise ValueError("wrong length")
        return tuple(kind(part) for kind, part in zip(kinds, parts))
    except (ValueError, UnicodeDecodeError):
        raise Problem(422, "invalid_cursor", "this cursor was not issued by this route", field="cursor") from None


def _wait_for_position(request: Request, min_position: int | None, projections: tuple[str, ...] | None) -> None:
    """Block until `projections` (all if None; the log only if empty) reach `min_position`.

    On timeout the read is refused with 503 and Retry-After, never served stale.
    """
    if not min_position:
        return
    state = chronicle(request)
    deadline = time.monotonic() + state.api_settings.min_position_wait_ms / 1000
    delay = 0.005
    while True:
        if projections == ():
            position = _safe_position(state)
        else:
            position = projected_position(state.pool, min_position, projections)
        if position >= min_position:
            return
        if not _issued(state, min_position):
            raise Problem(
                422, "min_position_not_issued",
                f"min_position {min_position} is beyond every position this log has issued; "
                "send a position from a command's response",
                field="min_position", projected_position=position,
            )
        if time.monotonic() >= deadline:
            held_back = _held_back_since(state)
            raise Problem(
                503, "projection_behind",
                f"the projections have reached position {position}, not {min_position}, "
                f"within {state.api_settings.min_position_wait_ms} ms"
                + (f"; the log has been held back since {held_back} by an open append" if held_back else ""),
                field="min_position", headers={"Retry-After": "1"}, projected_position=position,
                log_held_back_since=held_back,
            )
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def min_position_for(*projections: str) -> Callable[..., int | None]:
    """Read-your-writes for reads served by `projections` (none named: the event log itself).

    The dependency waits, bounded, until they have applied every event up to `?min_position=`.
    """

    def dependency(
        request: Request,
        min_position: int | None = Query(
            None, ge=0, le=MAX_POSITION, description="wait (bounded) until the read side has reached this log position"
        ),
    ) -> int | None:
        _wait_for_position(request, min_position, projections)
        return min_position

    return dependency


min_position_param = min_position_for()


def _issued(state: ChronicleState, position: int) -> bool:
    """Whether the log has handed out `position` yet (a position no command got is never reached)."""
    with state.pool.connection() as conn:
        row = conn.execute(
            "SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END AS issued FROM events_position_seq"
        ).fetchone()
    return position <= row["issued"]


def _held_back_since(state: ChronicleState) -> str | None:
    """Since when an open append has held readers below the log's head (ISO 8601), if it has."""
    with state.pool.connection() as conn:
        since = read_log_status(conn).held_back_since
    return since.isoformat() if since else None


def _safe_position(state: ChronicleState) -> int:
    with state.pool.connection() as conn:
        return conn.execute("SELECT safe_position() AS p").fetchone()["p"]
