"""ASGI middleware: each request's correlation and causation ids, bound to its logs and echoed back.

An incoming `X-Correlation-Id` is kept; without one a fresh id is put on the request, so the
command's events carry the same id the response echoes and every log line of the request names.
"""

from __future__ import annotations

import logging
import random
import re
import time
import uuid

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

logger = structlog.get_logger("chronicle.http")
# The same shape the command context accepts (api/deps.py); anything else is left for it to refuse.
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@/+=-]{0,199}$")
# Probes and scrapes log at debug: they come every few seconds and say nothing new.
QUIET_PATHS = frozenset({"/metrics", "/healthz", "/readyz"})


def fresh_id() -> str:
    """A fresh correlation id: a random version-4 UUID, drawn from the process's seeded generator.

    uuid4 reads os.urandom, a system call that lets go of the GIL: in the event loop, mid-request,
    a route thread takes it and the loop waits to get it back. The generator is seeded from the
    system's randomness, again in a forked child; an id names a request, it guards nothing.
    """
    return str(uuid.UUID(int=random.getrandbits(128), version=4))


class RequestContextMiddleware:
    """Bind the request's correlation and causation ids to its logs; echo X-Correlation-Id; log it.

    The request's line is built only when its level is on (CHRONICLE_LOG_LEVEL).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.enabled = logging.getLogger("chronicle.http").isEnabledFor

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = causation = None
        for name, value in scope["headers"]:  # one pass over the raw headers, no Headers object
            if name == b"x-correlation-id" and incoming is None:
                incoming = value.decode("latin-1")
            elif name == b"x-causation-id" and causation is None:
                causation = value.decode("latin-1")
        if incoming is not None and _ID.match(incoming):
            correlation_id = incoming
        else:
            correlation_id = fresh_id()
            if incoming is None:
                # The route reads the header: give it ours, so the events carry what we echo.
                scope = dict(scope)
                scope["headers"] = [*scope["headers"], (b"x-correlation-id", correlation_id.encode())]
        bound = {"correlation_id": correlation_id}
        if causation is not None and _ID.match(causation):
            bound["causation_id"] = causation
        tokens = structlog.contextvars.bind_contextvars(**bound)
        echoed = (b"x-correlation-id", correlation_id.encode())
        status = 500
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = dict(message)
                message["headers"] = [
                    *(h for h in message.get("headers", []) if h[0].lower() != b"x-correlation-id"), echoed,
                ]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            path = scope["path"]
            quiet = path in QUIET_PATHS
            if self.enabled(logging.DEBUG if quiet else logging.INFO):
                principal = (scope.get("state") or {}).get("principal")
                (logger.debug if quiet else logger.info)(
                    "http request", method=scope["method"], path=path, status=status,
                    duration_ms=round((time.perf_counter() - started) * 1000, 2),
                    actor_id=getattr(principal, "actor_id", None))
            structlog.contextvars.reset_contextvars(**tokens)
