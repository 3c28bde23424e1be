"""Keep-alive connections spread over the server processes: now and then a response closes its connection.

Several API processes accept from one socket, and a client's keep-alive connection stays with the
process that accepted it. Clients that connect together (a pool opening its connections at start)
land unevenly, often 12 of 16 in one process, and that process's event loop then caps the
throughput while the other's idles. Closing one response in KEEP_ALIVE_REQUESTS (on average, at
random) makes its client reconnect, and the process least busy accepts first: the connections
drift to where there is room. A reconnect on the loopback costs well under a millisecond; HTTP/1.1
clients reopen a closed connection by themselves (servers such as nginx cap keep-alive alike).
"""

from __future__ import annotations

import random

from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Requests a keep-alive connection serves, on average, before its response asks the client to reconnect.
KEEP_ALIVE_REQUESTS = 50


class SpreadConnectionsMiddleware:
    """Answer one request in KEEP_ALIVE_REQUESTS, at random, with `Connection: close`."""

    def __init__(self, app: ASGIApp, keep_alive_requests: int = KEEP_ALIVE_REQUESTS) -> None:
        self.app = app
        self.share = 1 / keep_alive_requests

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or random.random() >= self.share:
            await self.app(scope, receive, send)
            return

        async def send_closing(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                if not any(name.lower() == b"connection" for name, _ in headers):
                    message = {**message, "headers": [*headers, (b"connection", b"close")]}
            await send(message)

        await self.app(scope, receive, send_closing)
