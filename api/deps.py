"""What every route shares: Chronicle's state, the caller's key and role, versions, metadata.

Routes stay thin: they take these as FastAPI dependencies and call the services.
"""

from __future__ import annotations

import base64
import dataclasses
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
from fastapi import Depends, Query, Request, Response
from psycopg_pool import ConnectionPool
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from service_layer.keys import ApiKey, KeyCache
from api.problems import Problem
from projections.status import projected_position
from infrastructure.config import Settings
from infrastructure.event_store import EventStore
from infrastructure.log_status import LogStatus, read_log_status
from infrastructure.replica import ReadReplica, RequestReads, primary_lsn


class ApiSettings(BaseSettings):
    """The HTTP API's own limits, from the environment (CHRONICLE_API_*)."""

    model_config = SettingsConfigDict(env_prefix="CHRONICLE_API_", extra="ignore")

    max_body_bytes: int = Field(default=1_179_648, ge=1024)
    default_page_size: int = Field(default=50, ge=1)
    max_page_size: int = Field(default=500, ge=1)
    # How long a read with ?min_position= waits for the projections, at most.
    min_position_wait_ms: int = Field(default=5_000, ge=0, le=60_000)
    # How long a checked API key is trusted without asking the database again (0: every request asks).
    # A key revoked by another process (the CLI, another API process) is refused within this bound.
    key_cache_seconds: float = Field(default=1.0, ge=0, le=60)


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
    keys: KeyCache = field(default_factory=lambda: KeyCache(API_SETTINGS.key_cache_seconds))
    log_listener: Any = None  # infrastructure.log_listener.LogListener, started by the first feed
    replica: ReadReplica | None = None  # DATABASE_READ_URL's pool, if set
    reads: RequestReads | None = None  # in a read request's copy: where its reads go (`pool` is it)

    @property
    def primary(self) -> ConnectionPool:
        """The primary's pool, also in a read request's copy whose `pool` reads from the replica."""
        return self.store.pool


async def chronicle(request: Request) -> ChronicleState:
    """The running app's ChronicleState.

    The dependencies here are async (they never block), so they run in the event loop, not
    each in a worker thread of its own: only the route itself takes a thread.
    """
    return request.app.state.chronicle


async def read_state(request: Request, response: Response) -> ChronicleState:
    """What a read route uses: with a replica, a copy of the state whose `pool` reads from it.

    FastAPI solves it once per request, so the route and its ?min_position= wait share the copy;
    the response's headers say which server served the read. It never blocks (event loop).
    """
    state: ChronicleState = request.app.state.chronicle
    if state.replica is None:
        return state
    reads = RequestReads(state.replica, response.headers)
    request.state.reads = reads  # an error's problem+json says it too
    return dataclasses.replace(state, pool=reads, reads=reads)  # type: ignore[arg-type]


def authorize(request: Request, permission: str) -> ApiKey:
    """The caller's key if its role holds `permission`, as ApiKeyMiddleware resolved it.

    No key, a malformed, unknown or revoked key: 401. A live key outside its role: 403.
    """
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


def require(permission: str) -> Callable[..., ApiKey]:
    """A dependency that admits only keys whose role holds `permission` (see `authorize`).

    Its `permission` attribute names it for the OpenAPI document (api/openapi_doc.py).
    """

    async def check(request: Request) -> ApiKey:
        return authorize(request, permission)

    check.__name__ = f"require_{permission}"
    check.permission = permission  # type: ignore[attr-defined]
    return check


Reader = Depends(require("read"))
Writer = Depends(require("write"))
Auditor = Depends(require("audit"))
Operator = Depends(require("operate"))
Admin = Depends(require("keys"))
Subscriber = Depends(require("subscribe"))
Describer = Depends(require("describe"))


async def page_size(
    limit: int = Query(API_SETTINGS.default_page_size, ge=1, le=MAX_PAGE, description="page size"),
) -> int:
    """The page size asked for, bounded by CHRONICLE_API_MAX_PAGE_SIZE."""
    return limit


_ETAG = re.compile(r'^\s*"?(\d{1,18})"?\s*$')


def parse_if_match(if_match: str | None) -> int | None:
    """The version an If-Match value names, or None for no header or `*` ("any version").

    Anything else malformed is 422. If-Match compares strongly (RFC 9110 13.1.1): a weak ETag
    (W/"3") never matches, so 412.
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


def _wait_for_position(state: ChronicleState, min_position: int | None, projections: tuple[str, ...] | None) -> None:
    """Block until `projections` (all if None; the log only if empty) reach `min_position`.

    With a replica, the log first: once the primary's safe position is there, until the replica
    has replayed what the primary had written then; then the projections, on the replica's copy
    of their checkpoints. If the replica is not there in time but the primary is, the read goes
    to the primary. On timeout the read is refused with 503 and Retry-After, never served stale.
    """
    if not min_position:
        return
    deadline = time.monotonic() + state.api_settings.min_position_wait_ms / 1000
    reads = state.reads
    replayed = reads is None  # whether the log up to min_position is where the read goes
    delay = 0.005
    while True:
        if projections == () or not replayed:
            position = _safe_position(state)
            if not replayed and position >= min_position:
                with state.primary.connection() as conn:
                    lsn = primary_lsn(conn)
                replayed = reads.wait_replayed(lsn, deadline) or not reads.on_replica
            if not replayed:
                position = min(position, min_position - 1)
        if projections != () and replayed:
            # The replica's own checkpoints when reading there (the primary's once the read fell back).
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
            if reads is not None and reads.on_replica and projections != () \
                    and projected_position(state.primary, min_position, projections) >= min_position:
                reads.use_primary("replica_behind")
                return
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


def min_position_for(*projections: str, primary: bool = False) -> Callable[..., int | None]:
    """Read-your-writes for reads served by `projections` (none named: the event log itself).

    The dependency waits, bounded, until they have applied every event up to `?min_position=`;
    on the replica for routes that read there, on the primary for those that do not (`primary`).
    """

    async def dependency(
        request: Request,
        state: ChronicleState = Depends(chronicle if primary else read_state),
        min_position: int | None = MinPosition,
    ) -> int | None:
        await wait_for_position(state, min_position, projections)
        return min_position

    dependency.projections = projections  # type: ignore[attr-defined]  # for api.read_support.reading
    return dependency


# ?min_position=: read-your-writes, on every read route.
MinPosition = Query(None, ge=0, le=MAX_POSITION, description="wait (bounded) until the read side has reached this log position")


async def wait_for_position(state: ChronicleState, min_position: int | None, projections: tuple[str, ...]) -> None:
    """Wait (bounded) until `projections` have applied ?min_position= (`_wait_for_position`).

    The wait blocks: a worker thread's, never the event loop's; without a position nothing waits.
    """
    if min_position:
        await anyio.to_thread.run_sync(_wait_for_position, state, min_position, projections)


min_position_param = min_position_for()
min_position_on_primary = min_position_for(primary=True)


def read_log_bound(state: ChronicleState) -> LogStatus:
    """The log's head and safe position, from the primary (only it knows its open appends).

    Reading on a replica, the safe position is the newest the primary had that the replica has
    replayed; if it has replayed none of those, the read waits (bounded) or goes to the primary.
    """
    with state.primary.connection() as conn:
        log = read_log_status(conn)
        lsn = primary_lsn(conn) if state.reads is not None else None
    if state.reads is None or lsn is None:
        return log
    deadline = time.monotonic() + state.api_settings.min_position_wait_ms / 1000
    return dataclasses.replace(log, safe=state.reads.log_bound(log.safe, lsn, deadline))


def _issued(state: ChronicleState, position: int) -> bool:
    """Whether the log has handed out `position` yet (a position no command got is never reached)."""
    with state.primary.connection() as conn:
        row = conn.execute(
            "SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END AS issued FROM events_position_seq"
        ).fetchone()
    return position <= row["issued"]


def _held_back_since(state: ChronicleState) -> str | None:
    """Since when an open append has held readers below the log's head (ISO 8601), if it has."""
    with state.primary.connection() as conn:
        since = read_log_status(conn).held_back_since
    return since.isoformat() if since else None


def _safe_position(state: ChronicleState) -> int:
    with state.primary.connection() as conn:
        return conn.execute("SELECT safe_position() AS p").fetchone()["p"]
