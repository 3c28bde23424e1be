"""The HTTP API's app factory: FastAPI, OpenAPI at /openapi.json, problem+json errors.

`create_app(url)` builds an app that opens its pool when it starts; uvicorn serves it
(`chronicle serve`, `chronicle up`).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse

import console.app as console
import service_layer.operator_events  # noqa: F401 - registers the operator.* event types
from api import (
    metrics, openapi_doc, problems, routes_audit, routes_commands, routes_document_commands, routes_event_types,
    routes_groups, routes_log, routes_operations, routes_reads, routes_sessions, routes_streams, routes_subjects,
    routes_subscribe, routes_system,
)
from api.connections import SpreadConnectionsMiddleware
from api.deps import API_SETTINGS, ApiSettings, ChronicleState
from api.middleware import (
    ApiKeyMiddleware, BodyLimitMiddleware, IdempotencyMiddleware, UnavailableMiddleware, prune_idempotency_keys,
)
from api.guards import JsonBodyMiddleware, no_unknown_query
from api.request_context import RequestContextMiddleware
from infrastructure.config import Settings, get_settings
from infrastructure.db import create_pool
from infrastructure.errors import StoreError
from domain.errors import DomainError
from domain.event_types import EventTypeError
from infrastructure.event_store import EventStore
from service_layer.bootstrap import bootstrap, build_read_replica, shutdown, write_event_definitions
from service_layer.keys import KeyCache

logger = logging.getLogger("chronicle.api")
# How often the API deletes expired Idempotency-Key responses.
PRUNE_SECONDS = 600
# The API's routers, in the order /openapi.json lists their routes.
ROUTERS = (routes_system.router, metrics.router, routes_audit.router, routes_reads.router, routes_sessions.router,
           routes_commands.router, routes_document_commands.router, routes_streams.router, routes_operations.router,
           routes_subjects.router, routes_subscribe.router, routes_groups.router, routes_event_types.router,
           routes_log.router)
# Matched first: document reads and commands, what most requests are.
MATCHED_FIRST = (routes_reads.router, routes_document_commands.router, routes_commands.router)
# Allocations (less deallocations) between young-generation collections in a server process.
GC_YOUNG_THRESHOLD = 10_000


async def _prune_idempotency_keys(pool: Any, retention_seconds: float) -> None:
    """Every PRUNE_SECONDS, delete Idempotency-Key responses older than the retention."""
    while True:
        await asyncio.sleep(PRUNE_SECONDS)
        try:
            deleted = await anyio.to_thread.run_sync(prune_idempotency_keys, pool, retention_seconds)
            if deleted:
                logger.info("pruned %d expired Idempotency-Key responses", deleted)
        except Exception as exc:  # noqa: BLE001 - the database is away: try again next time
            logger.warning("could not prune Idempotency-Key responses: %s", exc)


def create_app(
    database_url: str | None = None,
    settings: Settings | None = None,
    *,
    api_settings: ApiSettings | None = None,
    broker: str | None = None,
    serving: bool = False,
    spread: bool = False,
) -> FastAPI:
    """A FastAPI app on the store at `database_url` (default: DATABASE_URL).

    `broker` says how workers run beside it ("redis", "in-process", "absent"), for /readyz;
    `serving`: the app is its server process's only one, which settles its heap once started;
    `spread`: it is one of several server processes, which share the clients' connections.
    """
    settings = settings or get_settings()
    url = database_url or settings.database_url
    if not url:
        raise RuntimeError("create_app needs a database URL (DATABASE_URL, or `chronicle up`)")
    api_settings = api_settings or API_SETTINGS
    retention_seconds = settings.chronicle_idempotency_retention_hours * 3600

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = create_pool(url, settings, name="chronicle-api")
        store = EventStore(pool, settings=settings)
        state = ChronicleState(
            settings=settings, api_settings=api_settings, database_url=url, pool=pool, store=store,
            broker=broker or ("redis" if settings.redis_url else "absent"),
            keys=KeyCache(api_settings.key_cache_seconds),
            replica=build_read_replica(pool, settings),
        )
        try:
            write_event_definitions(store)
        except Exception:  # noqa: BLE001 - definitions are informative; never block a start
            logger.exception("could not write event definitions")
        wired = bootstrap(store, url, settings, state.broker)
        state.service, state.wake_projection, state.wake_job = wired.service, wired.wake_projection, wired.wake_job
        metrics.instrument_service(state.service)
        app.state.chronicle = state
        if serving:
            settle_heap()
        pruning = asyncio.create_task(_prune_idempotency_keys(pool, retention_seconds))
        try:
            yield
        finally:
            pruning.cancel()
            if state.log_listener is not None:
                state.log_listener.stop()
            shutdown(wired)
            if state.replica is not None:
                state.replica.close()
            pool.close()

    app = FastAPI(
        title="Chronicle",
        version="0.1.0",
        summary="An event-sourced CQRS backend for a chain workspace.",
        description=(
            "Commands append events; reads come from the projected snapshot tables. "
            "A response's ETag is its stream's version; send it back as If-Match to append only "
            "if nothing changed since (412 otherwise). Idempotency-Key makes retries safe. "
            "Command responses carry their log position; reads accept ?min_position= to see them. "
            "Errors are application/problem+json with a stable `code` and the offending `field`."
        ),
        lifespan=lifespan,
        # Every route: a query parameter it does not declare is 422, never silently ignored.
        dependencies=[Depends(no_unknown_query)],
        swagger_ui_parameters={"persistAuthorization": True},
    )
    problems.install(app)

    @app.exception_handler(StoreError)
    async def _store_error(request: Request, exc: StoreError) -> JSONResponse:
        return _domain_problem(request, exc)

    @app.exception_handler(ValueError)
    async def _value_error(request: Request, exc: ValueError) -> JSONResponse:
        return _domain_problem(request, exc)

    for error_class in (DomainError, EventTypeError):  # problem+json by their `code`
        app.add_exception_handler(error_class, _domain_problem)

    # Added innermost first: idempotency sees the resolved key; the body limit is outermost.
    app.add_middleware(IdempotencyMiddleware, pool_getter=lambda: app.state.chronicle.pool,
                       retention_hours=settings.chronicle_idempotency_retention_hours)
    # A body that is not JSON is 415 before an Idempotency-Key is claimed.
    app.add_middleware(JsonBodyMiddleware)
    app.add_middleware(ApiKeyMiddleware, state_getter=lambda: app.state.chronicle)
    app.add_middleware(BodyLimitMiddleware, max_bytes=api_settings.max_body_bytes)
    # Database down under a middleware (key lookup, Idempotency-Key claim): 503, not a dropped connection.
    app.add_middleware(UnavailableMiddleware)
    # Outermost: every response, even a refused body, echoes its X-Correlation-Id and is logged.
    app.add_middleware(RequestContextMiddleware)
    if spread:  # now and then a client reconnects, to the process least busy (api/connections.py)
        app.add_middleware(SpreadConnectionsMiddleware)

    # A request is matched against the routes in order: the routers most requests take come first.
    # They share no path with the routers they pass (tests/api/test_contract.py checks it), so no
    # request changes hands; /openapi.json lists them in ROUTERS' order.
    first = len(app.routes)
    included: dict[Any, list[Any]] = {}
    for router in (*MATCHED_FIRST, *(r for r in ROUTERS if r not in MATCHED_FIRST)):
        start = len(app.routes)
        app.include_router(router)
        included[id(router)] = app.routes[start:]
    listed = [*app.routes[:first], *(route for router in ROUTERS for route in included[id(router)])]
    console.install(app)
    openapi_doc.install(app, lambda: [*listed, *app.routes[len(listed):]])
    return app


def settle_heap() -> None:
    """Freeze what a server process built at startup out of the collector's sight; collect young
    objects less often. A request makes hundreds of short-lived objects; with the default
    threshold (700) they trigger collections that now and then walk the whole heap, the app's
    routes and models included, and hold every request in the loop behind them (its p99)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])


def _domain_problem(request: Request, exc: Exception) -> JSONResponse:
    problem = problems.from_error(exc)
    if problem is None:
        problems.logger.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return problems.problem_response(
            500, "internal_error", "the server failed to handle this request; it is logged", None,
            instance=request.url.path,
        )
    headers: dict[str, Any] = dict(problem.headers)
    return problems.problem_response(
        problem.status, problem.code, problem.detail, problem.field,
        instance=request.url.path, headers=headers, **problem.extra,
    )


def create_app_from_env() -> FastAPI:
    """The app on DATABASE_URL, its broker mode from CHRONICLE_API_BROKER: for server processes.

    `chronicle serve` and `up` start several processes by import string; each builds its app here,
    and logs as the command line does (CHRONICLE_LOG_FORMAT, uvicorn's lines through Chronicle's).
    Only among several (CHRONICLE_API_PROCESSES, which they set to their count) does it spread
    connections: a single process served by `uvicorn --factory` keeps its clients' connections.
    """
    from infrastructure.logs import configure_logging

    configure_logging(get_settings(), replace=True)
    processes = int(os.environ.get("CHRONICLE_API_PROCESSES") or 1)
    return create_app(settings=process_settings(get_settings(), processes),
                      broker=os.environ.get("CHRONICLE_API_BROKER") or None, serving=True, spread=processes > 1)


def process_settings(settings: Settings, processes: int) -> Settings:
    """The settings of one of `processes` server processes: the default append groups shared out.

    Each process writes its own groups, so the server's groups in flight would grow with its
    processes; more and smaller groups cost the database more per append (bench/api.py).
    A CHRONICLE_APPEND_GROUPS that is set is each process's own.
    """
    if processes <= 1 or "chronicle_append_groups" in settings.model_fields_set:
        return settings
    return settings.model_copy(
        update={"chronicle_append_groups": max(1, settings.chronicle_append_groups // processes)})
