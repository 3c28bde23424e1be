"""The asyncio client: `AsyncChronicle(url, key)`, the same resources as `Chronicle`, awaited.

`await client.documents.create(...)` runs the same calls as the sync client, with the same
Idempotency-Key retries, If-Match tracking and read-your-writes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from chronicle_client.calls import Call, T
from chronicle_client.client import ClientBase
from chronicle_client.groups import AsyncGroupMember
from chronicle_client.subscribe import AsyncSubscription


class AsyncChronicle(ClientBase):
    """A Chronicle API client for asyncio: every resource method returns an awaitable."""

    feed_type = AsyncSubscription
    member_type = AsyncGroupMember
    http_type = httpx.AsyncClient
    default_sleep: Callable[[float], Awaitable[None]] = staticmethod(asyncio.sleep)

    async def run(self, call: Call[T]) -> T:  # type: ignore[override]
        """Send one call, retrying what the policy allows with the same Idempotency-Key; its parsed answer."""
        steps = self.exchange(call)
        outcome: httpx.Response | Exception | None = None
        try:
            while True:
                outcome = await self.step(steps.send(outcome))
        except StopIteration as done:
            return done.value

    async def step(self, step: dict[str, Any] | float) -> httpx.Response | Exception | None:  # type: ignore[override]
        """Do one step of an exchange: send a request (its response, or the transport error), or wait."""
        if not isinstance(step, dict):
            return await self._sleep(step)
        try:
            return await self.http.request(**step)
        except httpx.TransportError as exc:
            return exc

    async def aclose(self) -> None:
        """Close the connections."""
        await self.http.aclose()

    async def __aenter__(self) -> "AsyncChronicle":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
