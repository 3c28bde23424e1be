"""ASGI middleware: each request's correlation and causation ids, bound to its logs and echoed back.

An incoming `X-Correlation-Id` is kept; without one a fresh id is put on the request, so the
command's events carry the same id the response echoes and every log line of the request names.
"""

from __future__ import annotations

import re
import time
import uuid

import structlog
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

logger = structlog.get_logger("chronicle.http")
# The same shape the command context accepts (api/deps.py); anything else is left for it to refuse.
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@/+=-]{0,199}$")
# Probes and scrapes log at debug: they come every few seconds and say nothing new.
QUIET_PATHS = frozenset({"/metrics", "/healthz", "/readyz"})


class RequestContextMiddleware:
    """Bind the request's correlation and causation ids to its logs; echo X-Correlation-Id; log it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        incoming = headers.get("x-correlation-id")
        if incoming is not None and _ID.match(incoming):
            correlation_id = incoming
        else:
            correlation_id = str(uuid.uuid4())
            if incoming is None:
                # The route reads the header: give it ours, so the events carry what we echo.
                scope = dict(scope)
                scope["headers"] = [*scope["headers"], (b"x-correlation-id", correlation_id.encode())]
        causation = headers.get("x-causation-id")
        bound = {"correlation_id": correlation_id}
        if causation is not None and _ID.match(causation):
            bound["causation_id"] = causation
        tokens = structlog.contextvars.bind_contextvars(**bound)
        status = 500
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = dict(message)
                message["headers"] = [
                    *(h for h in message.get("headers", []) if h[0].lower() != b"x-correlation-id"),
                    (b"x-correlation-id", correlation_id.encode()),
                ]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            path = scope["path"]
            log = logger.debug if path in QUIET_PATHS else logger.info
            principal = (scope.get("state") or {}).get("principal")
            log("http request", method=scope["method"], path=path, status=status,
                duration_ms=round((time.perf_counter() - started) * 1000, 2),
                actor_id=getattr(principal, "actor_id", None))
            structlog.contextvars.reset_contextvars(**tokens)
