"""The asyncio client: `AsyncChronicle(url, key)`, the same resources as `Chronicle`, awaited.

`await client.documents.create(...)` runs the same calls as the sync client, with the same
Idempotency-Key retries, If-Match tracking and read-your-writes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import httpx

from chronicle_client.calls import Call, T
from chronicle_client.client import ClientBase, http_settings
from chronicle_client.groups import AsyncGroupMember
from chronicle_client.retry import RetryPolicy
from chronicle_client.subscribe import AsyncSubscription


class AsyncChronicle(ClientBase):
    """A Chronicle API client for asyncio: every resource method returns an awaitable."""

    feed_type = AsyncSubscription
    member_type = AsyncGroupMember

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
        steps = self.exchange(call)
        step = next(steps)
        try:
            while True:
                if isinstance(step, dict):
                    try:
                        outcome: httpx.Response | Exception = await self.http.request(**step)
                    except httpx.TransportError as exc:
                        outcome = exc
                    step = steps.send(outcome)
                else:
                    await self._sleep(step)
                    step = steps.send(None)
        except StopIteration as done:
            return done.value

    async def aclose(self) -> None:
        """Close the connections."""
        await self.http.aclose()

    async def __aenter__(self) -> "AsyncChronicle":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
