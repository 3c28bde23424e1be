"""The asyncio client: `AsyncChronicle(url, key)`, the same resources as `Chronicle`, awaited.

`await client.documents.create(...)` runs the same calls as the sync client, with the same
Idempotency-Key retries, If-Match tracking and read-your-writes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

import httpx

from chronicle_client.calls import Call, T
from chronicle_client.client import ClientBase, http_settings
from chronicle_client.errors import raise_for_problem
from chronicle_client.models import Event
from chronicle_client.retry import RetryPolicy, settle

if TYPE_CHECKING:
    from chronicle_client.groups import AsyncGroupMember
    from chronicle_client.subscribe import AsyncSubscription


class AsyncChronicle(ClientBase):
    """A Chronicle API client for asyncio: every resource method returns an awaitable."""

    def __init__(self, url: str | None = None, key: str | None = None, *, session_id: str | None = None,
                 retry: RetryPolicy | None = None, timeout: float = 30.0, track_versions: bool = True,
                 read_your_writes: bool = True, transport: httpx.AsyncBaseTransport | None = None,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        base, headers = http_settings(url, key, session_id)
        self.http = httpx.AsyncClient(base_url=base, headers=headers, timeout=timeout, transport=transport)
        self._sleep = sleep
        super().__init__(retry, track_versions, read_your_writes)

    async def run(self, call: Call[T]) -> T:  # type: ignore[override]
        """Send one call, retrying what the policy allows with the same Idempotency-Key; its parsed answer."""
        headers, params = self.tracker.prepare(call)
        attempt = 0
        while True:
            attempt += 1
            response, error = None, None
            try:
                response = await self.http.request(call.method, call.path, json=call.json, params=params,
                                                   headers=headers)
            except httpx.TransportError as exc:
                error = exc
            wait = settle(self.retry, attempt, response, error)
            if wait is None:
                assert response is not None
                self.tracker.learn(call, response)
                raise_for_problem(response)
                return self.tracker.parse(call, response)
            await self._sleep(wait)

    def subscribe(self, *, after: int = 0, types: Sequence[str] = (), stream_type: str | None = None,
                  stream_id: str | None = None, format: str = "ndjson") -> "AsyncSubscription":
        """Follow the log from after `after`: an async iterator of events that reconnects where it left off."""
        from chronicle_client.subscribe import AsyncSubscription

        return AsyncSubscription(self, after=after, types=types, stream_type=stream_type, stream_id=stream_id,
                                 format=format)

    def member(self, group: str, handler: Callable[[Event], Any], **options: Any) -> "AsyncGroupMember":
        """A consumer-group member that runs `handler` (sync or async) on each event of its partitions."""
        from chronicle_client.groups import AsyncGroupMember

        return AsyncGroupMember(self, group, handler, **options)

    async def aclose(self) -> None:
        """Close the connections."""
        await self.http.aclose()

    async def __aenter__(self) -> "AsyncChronicle":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
