"""ASGI middleware: body size limit, API-key resolution, and Idempotency-Key replay.

Order, outermost first: body limit, then the key (so idempotency is scoped per key),
then idempotency, then the routes.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

import anyio
import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.problems import problem_response, unavailable

logger = logging.getLogger("chronicle.api")
MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Responses that are not replayed: the request may well succeed when retried.
NOT_REPLAYED = frozenset({401, 403, 408, 413, 429})
STALE_IN_FLIGHT_SECONDS = 60
REPLAYED_HEADERS = ("content-type", "etag", "location", "x-chronicle-position", "x-chronicle-version")


class BodyTooLarge(Exception):
    """The request body grew past the limit while it was being read."""


async def read_body(receive: Receive, max_bytes: int | None = None) -> bytes | None:
    """The whole request body from ASGI `receive`, or None if the client went away.

    Raises BodyTooLarge as soon as more than `max_bytes` have arrived, without reading the rest.
    """
    body = bytearray()
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        body += message.get("body", b"")
        more = message.get("more_body", False)
        if max_bytes is not None and len(body) > max_bytes:
            raise BodyTooLarge
    return bytes(body)


def replaying(body: bytes, receive: Receive) -> Receive:
    """An ASGI `receive` that gives the app the body already read, then defers to `receive`.

    Middleware that must read the body first hands the app this instead of the spent stream.
    """
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


class BodyLimitMiddleware:
    """Refuse request bodies over `max_bytes` with 413, whether declared or streamed."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None:
            if not declared.isdigit():
                await problem_response(400, "bad_content_length", "Content-Length is not a number", "Content-Length")(
                    scope, receive, send
                )
                return
            if int(declared) > self.max_bytes:
                await self._too_large(scope, receive, send)
                return
        try:
            body = await read_body(receive, self.max_bytes)
        except BodyTooLarge:
            await self._too_large(scope, receive, send)
            return
        if body is None:
            return

        await self.app(scope, replaying(body, receive), send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        await problem_response(
            413, "body_too_large", f"request bodies are limited to {self.max_bytes} bytes", "body",
            headers={"Connection": "close"},
        )(scope, receive, send)


class UnavailableMiddleware:
    """Answer 503 + Retry-After (problem+json) when the database fails under a middleware.

    The routes' errors are handled inside the app; this catches those raised before the
    routes (the key lookup, an Idempotency-Key claim), so they never reach the server as an
    unhandled exception, which would log a 500 and drop the client's connection.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watch(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except Exception as exc:
            problem = unavailable(exc)
            if problem is None or started:
                raise
            logger.warning("database unavailable on %s %s: %s", scope["method"], scope["path"], exc)
            await problem_response(problem.status, problem.code, problem.detail, None,
                                   instance=scope["path"], headers=problem.headers)(scope, receive, send)


class ApiKeyMiddleware:
    """Resolve `Authorization: Bearer <key>` to a live key in `request.state.principal`.

    Routes decide what a missing key means (401) and what a role may do (403). A key checked
    less than CHRONICLE_API_KEY_CACHE_SECONDS ago is taken from the state's cache, in the loop.
    """

    def __init__(self, app: ASGIApp, state_getter: Any) -> None:
        self.app = app
        self.state_getter = state_getter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        state["principal"] = None
        state["auth_problem"] = "missing"
        header = Headers(scope=scope).get("authorization")
        if header:
            scheme, _, token = header.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                state["auth_problem"] = "malformed"
            else:
                token, chronicle = token.strip(), self.state_getter()
                key = chronicle.keys.get(token) or await anyio.to_thread.run_sync(
                    chronicle.keys.authenticate, chronicle.pool, token)
                state["principal"] = key
                state["auth_problem"] = None if key else "invalid"
        await self.app(scope, receive, send)


class IdempotencyMiddleware:
    """Commands with an Idempotency-Key: the first response is stored and every retry gets it.

    Keys are scoped per API key. The same key with a different request (method, path, query,
    body or If-Match) is 422 idempotency_key_reused; a retry
    while the first is still running is 409. Server errors are not stored, so they retry.
    """

    def __init__(self, app: ASGIApp, pool_getter: Any, retention_hours: float = 24.0) -> None:
        self.app = app
        self.pool_getter = pool_getter
        self.retention_seconds = retention_hours * 3600

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in MUTATING:
            await self.app(scope, receive, send)
            return
        idem = Headers(scope=scope).get("idempotency-key")
        principal = scope.get("state", {}).get("principal")
        if idem is None or principal is None:
            await self.app(scope, receive, send)
            return
        if not (1 <= len(idem) <= 200) or not idem.isprintable():
            await problem_response(
                422, "invalid_idempotency_key", "Idempotency-Key must be 1-200 printable characters",
                "Idempotency-Key",
            )(scope, receive, send)
            return

        body = await read_body(receive)
        if body is None:
            return
        digest = hashlib.sha256()
        # The preconditions are part of the request: a retry with another If-Match is a different request.
        for part in (scope["method"], scope["path"], scope.get("query_string", b"").decode("latin-1"),
                     Headers(scope=scope).get("if-match") or ""):
            digest.update(part.encode() + b"\0")
        digest.update(bytes(body))
        request_hash = digest.hexdigest()

        pool = self.pool_getter()
        claim = await anyio.to_thread.run_sync(
            _claim, pool, principal.key_id, idem, request_hash, scope["method"], scope["path"],
            self.retention_seconds,
        )
        if claim is not None:
            await self._answer_existing(claim, request_hash, scope, receive, send)
            return

        captured: dict[str, Any] = {"status": None, "headers": [], "body": bytearray()}
        finished = False

        async def finish() -> None:
            """Store the response for replay (or release the claim) - before the client has it all,
            so a retry sent the moment the first answer arrives is replayed, not told "in flight"."""
            nonlocal finished
            if finished:
                return
            finished = True
            status = captured["status"] or 500
            with anyio.CancelScope(shield=True):
                no_store = any(
                    k.lower() == b"cache-control" and b"no-store" in v.lower() for k, v in captured["headers"]
                )
                if status >= 500 or status in NOT_REPLAYED or no_store:
                    await anyio.to_thread.run_sync(_release, pool, principal.key_id, idem)
                    return
                headers = {
                    k.decode("latin-1").lower(): v.decode("latin-1")
                    for k, v in captured["headers"]
                    if k.decode("latin-1").lower() in REPLAYED_HEADERS
                }
                try:
                    await anyio.to_thread.run_sync(
                        _complete, pool, principal.key_id, idem, status, headers, bytes(captured["body"])
                    )
                except (psycopg.OperationalError, psycopg.InterfaceError, PoolTimeout):
                    # The claim goes stale; the domain still dedups the retried command by its id.
                    logger.warning("could not store the response for Idempotency-Key %s: database unavailable", idem)

        async def capture(message: Message) -> None:
            if message["type"] == "http.response.start":
                captured["status"] = message["status"]
                captured["headers"] = message.get("headers", [])
            elif message["type"] == "http.response.body":
                captured["body"] += message.get("body", b"")
                if not message.get("more_body", False):
                    await finish()
            await send(message)

        try:
            await self.app(scope, replaying(body, receive), capture)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(_release, pool, principal.key_id, idem)
            raise
        await finish()

    async def _answer_existing(
        self, row: dict[str, Any], request_hash: str, scope: Scope, receive: Receive, send: Send
    ) -> None:
        if row["request_hash"] != request_hash:
            response = problem_response(
                422, "idempotency_key_reused",
                "this Idempotency-Key was used for a different request", "Idempotency-Key",
            )
        elif row["status"] is None:
            response = problem_response(
                409, "idempotency_key_in_flight",
                "the first request with this Idempotency-Key is still running; retry shortly",
                "Idempotency-Key", headers={"Retry-After": "1"},
            )
        else:
            headers = dict(row["headers"] or {})
            headers["idempotent-replayed"] = "true"
            await send({
                "type": "http.response.start",
                "status": row["status"],
                "headers": [(k.encode("latin-1"), str(v).encode("latin-1")) for k, v in headers.items()]
                + [(b"content-length", str(len(row["body"] or b"")).encode())],
            })
            await send({"type": "http.response.body", "body": bytes(row["body"] or b"")})
            return
        await response(scope, receive, send)


def _claim(
    pool: ConnectionPool, key_id: str, idem: str, request_hash: str, method: str, path: str,
    retention_seconds: float,
) -> dict[str, Any] | None:
    """Claim an idempotency key for this request: None if claimed now, else the stored row.

    A key older than the retention is free again (its row waits for `prune_idempotency_keys`).
    """
    with pool.connection() as conn:
        for _ in range(2):
            row = conn.execute(
                "INSERT INTO idempotency_keys (key_id, idempotency_key, request_hash, method, path)"
                " VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING RETURNING key_id",
                (key_id, idem, request_hash, method, path),
            ).fetchone()
            if row is not None:
                return None
            existing = conn.execute(
                "SELECT request_hash, status, headers, body, created_at,"
                # Stale: claimed long ago, or before PostgreSQL restarted (that request's
                # connections died with it and its release may never have reached us).
                " (status IS NULL AND (created_at < now() - make_interval(secs => %s)"
                "   OR created_at < pg_postmaster_start_time())) AS stale,"
                " created_at < now() - make_interval(secs => %s) AS expired"
                " FROM idempotency_keys WHERE key_id = %s AND idempotency_key = %s",
                (STALE_IN_FLIGHT_SECONDS, retention_seconds, key_id, idem),
            ).fetchone()
            if existing is None:
                continue  # released between our insert and select: try once more
            if existing["stale"] or existing["expired"]:
                # The first request's process died mid-way (nothing stored), or the key outlived
                # the retention: run the request again. The row is deleted only if it is still
                # the one we judged, so two retries never both free a key the other claimed.
                conn.execute(
                    "DELETE FROM idempotency_keys WHERE key_id = %s AND idempotency_key = %s"
                    " AND created_at = %s", (key_id, idem, existing["created_at"]),
                )
                continue
            return existing
    return {"request_hash": request_hash, "status": None, "headers": None, "body": None}


def _complete(
    pool: ConnectionPool, key_id: str, idem: str, status: int, headers: dict[str, str], body: bytes
) -> None:
    with pool.connection() as conn:
        conn.execute(
            "UPDATE idempotency_keys SET status = %s, headers = %s::jsonb, body = %s, completed_at = now()"
            " WHERE key_id = %s AND idempotency_key = %s",
            (status, json.dumps(headers), body, key_id, idem),
        )


def _release(pool: ConnectionPool, key_id: str, idem: str) -> None:
    """Forget an unfinished claim so a retry runs again; if the database is down, the claim
    goes stale instead (after a PostgreSQL restart at once, else after STALE_IN_FLIGHT_SECONDS)."""
    try:
        with pool.connection() as conn:
            conn.execute(
                "DELETE FROM idempotency_keys WHERE key_id = %s AND idempotency_key = %s AND status IS NULL",
                (key_id, idem),
            )
    except (psycopg.OperationalError, psycopg.InterfaceError, PoolTimeout):
        logger.warning("could not release Idempotency-Key claim %s of key %s: database unavailable", idem, key_id)


def prune_idempotency_keys(pool: ConnectionPool, retention_seconds: float, batch: int = 10_000) -> int:
    """Delete stored Idempotency-Key responses older than the retention; return how many.

    In batches, so a large backlog never holds locks for long.
    """
    deleted = 0
    with pool.connection() as conn:
        while True:
            count = conn.execute(
                "DELETE FROM idempotency_keys WHERE ctid = ANY (ARRAY("
                " SELECT ctid FROM idempotency_keys WHERE created_at < now() - make_interval(secs => %s)"
                " LIMIT %s))", (retention_seconds, batch)).rowcount
            deleted += count
            if count < batch:
                return deleted
