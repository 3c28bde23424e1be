"""A consumer-group member: joins a group, runs a handler on its partitions' events, acks, heartbeats.

The server gives each member a share of the partitions (a hash of the stream id), so a
stream's events reach one member, in order. Delivery is at least once: after a crash or a lost
lease, events handled but not yet acked come again, so a handler must be idempotent (key its
effects by the event's `event_id` or `position`). A handler that raises nacks its event: the
server parks it with its stream's later events, which this member then skips until an operator
retries them. A handled batch is acked once, at the position the server read to, so after a
crash up to one batch comes again. A member whose lease expired joins again.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Callable
from contextlib import suppress
from typing import TYPE_CHECKING, Any

from chronicle_client.calls import Call
from chronicle_client.errors import ConflictError, Gone, NotFound
from chronicle_client.models import Event, GroupBatch, Membership

if TYPE_CHECKING:
    from chronicle_client.aio import AsyncChronicle
    from chronicle_client.client import Chronicle

LEASE_LOST = (NotFound, Gone)


class _Member:
    """What both members share: the group's requests, and which events of a batch to hand over."""

    def __init__(self, group: str, handler: Callable[[Event], Any], *, name: str | None = None,
                 lease_seconds: int | None = None, batch: int = 100, wait: float = 5.0,
                 heartbeat_every: float | None = None) -> None:
        self.group = group
        self.handler = handler
        self.name = name
        self.lease_seconds = lease_seconds
        self.batch = batch
        self.wait = wait
        self.heartbeat_every = heartbeat_every or (lease_seconds / 3 if lease_seconds else None)
        self.membership: Membership | None = None
        self.handled = 0
        self.nacked = 0
        self.joins = 0
        self.acked = 0
        self.stopping = False

    @property
    def _base(self) -> str:
        assert self.membership is not None, "join the group first"
        return f"/v1/groups/{self.group}/members/{self.membership.member_id}"

    def _join_call(self) -> Call[Membership]:
        body = {k: v for k, v in (("name", self.name), ("lease_seconds", self.lease_seconds)) if v is not None}
        return Call("POST", f"/v1/groups/{self.group}/members", Membership, json=body, command=True)

    def _heartbeat_call(self) -> Call[Membership]:
        return Call("POST", f"{self._base}/heartbeat", Membership)

    def _events_call(self) -> Call[GroupBatch]:
        return Call("GET", f"{self._base}/events", GroupBatch, params={"limit": self.batch, "wait": self.wait})

    def _ack_call(self, batch: GroupBatch) -> Call[Any] | None:
        """The ack of a handled batch: up to the position the server read to (else its last event)."""
        position = batch.position or max((e.position for e in batch.events), default=None)
        if position is None or (not batch.events and position <= self.acked):
            return None
        self.acked = max(self.acked, position)
        return Call("POST", f"{self._base}/ack", dict, json={"position": position})

    def _nack_call(self, event: Event, error: BaseException) -> Call[Any]:
        return Call("POST", f"{self._base}/nack", dict,
                    json={"position": event.position, "error": f"{type(error).__name__}: {error}"[:2000]})

    def _leave_call(self) -> Call[None]:
        return Call("DELETE", self._base)

    def _joined(self, membership: Membership) -> Membership:
        self.membership = membership
        self.joins += 1
        if self.heartbeat_every is None:
            self.heartbeat_every = (membership.lease_seconds or 30) / 3
        return membership

    def stop(self) -> None:
        """Finish the batch in hand, then leave the group (`run` returns)."""
        self.stopping = True


class GroupMember(_Member):
    """A member for threads: `run()` blocks, heartbeats from a thread of its own, until `stop()`."""

    def __init__(self, client: "Chronicle", group: str, handler: Callable[[Event], Any], **options: Any) -> None:
        super().__init__(group, handler, **options)
        self.client = client
        self._lock = threading.Lock()
        self._stopped = threading.Event()

    def join(self) -> Membership:
        """Join the group with a new lease; the partitions it owns come back."""
        with self._lock:
            return self._joined(self.client.run(self._join_call()))

    def heartbeat(self) -> Membership:
        """Renew the lease (joining again if it was lost); the partitions may have moved."""
        with self._lock:
            try:
                self.membership = self.client.run(self._heartbeat_call())
                return self.membership
            except LEASE_LOST:
                return self._joined(self.client.run(self._join_call()))

    def poll(self) -> int:
        """Fetch one batch, run the handler on each event (nacking what raises), ack the batch; how many ran."""
        try:
            batch = self.client.run(self._events_call())
            parked: set[str] = set()
            ran = 0
            for event in batch.events:
                if event.stream_id in parked:
                    continue  # parked on the server behind its stream's nacked event
                try:
                    self.handler(event)
                    ran += 1
                except Exception as exc:  # noqa: BLE001 - the handler's failure parks its event
                    parked.add(event.stream_id)
                    with suppress(ConflictError):  # the partition moved on: its next owner gets the event
                        self.client.run(self._nack_call(event, exc))
                        self.nacked += 1
            self.handled += ran
            if (ack := self._ack_call(batch)) is not None:
                self.client.run(ack)
            return ran
        except LEASE_LOST:  # the unacked batch goes to the partitions' next owners
            self.join()
            return 0

    def _heartbeats(self) -> None:
        while not self._stopped.wait(self.heartbeat_every or 10):
            try:
                self.heartbeat()
            except Exception:  # noqa: BLE001 - a missed beat is retried at the next one
                continue

    def run(self) -> None:
        """Join, then handle batches until `stop()`; heartbeats keep the lease meanwhile; leave at the end."""
        self.stopping = False
        self._stopped.clear()
        self.join()
        beats = threading.Thread(target=self._heartbeats, name=f"chronicle-heartbeat-{self.group}", daemon=True)
        beats.start()
        try:
            while not self.stopping:
                self.poll()
        finally:
            self._stopped.set()
            beats.join()
            self.leave()

    def leave(self) -> None:
        """Give the partitions back now (rather than when the lease runs out)."""
        if self.membership is not None:
            try:
                self.client.run(self._leave_call())
            except LEASE_LOST:
                pass
            self.membership = None


class AsyncGroupMember(_Member):
    """A member for asyncio: `await run()`, heartbeats from a task; the handler may be sync or async."""

    def __init__(self, client: "AsyncChronicle", group: str, handler: Callable[[Event], Any],
                 **options: Any) -> None:
        super().__init__(group, handler, **options)
        self.client = client

    async def join(self) -> Membership:
        """Join the group with a new lease; the partitions it owns come back."""
        return self._joined(await self.client.run(self._join_call()))

    async def heartbeat(self) -> Membership:
        """Renew the lease (joining again if it was lost)."""
        try:
            self.membership = await self.client.run(self._heartbeat_call())
            return self.membership
        except LEASE_LOST:
            return await self.join()

    async def poll(self) -> int:
        """Fetch one batch, run the handler on each event (nacking what raises), ack the batch; how many ran."""
        try:
            batch = await self.client.run(self._events_call())
            parked: set[str] = set()
            ran = 0
            for event in batch.events:
                if event.stream_id in parked:
                    continue
                try:
                    if inspect.isawaitable(result := self.handler(event)):
                        await result
                    ran += 1
                except Exception as exc:  # noqa: BLE001 - the handler's failure parks its event
                    parked.add(event.stream_id)
                    with suppress(ConflictError):
                        await self.client.run(self._nack_call(event, exc))
                        self.nacked += 1
            self.handled += ran
            if (ack := self._ack_call(batch)) is not None:
                await self.client.run(ack)
            return ran
        except LEASE_LOST:
            await self.join()
            return 0

    async def _heartbeats(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_every or 10)
            try:
                await self.heartbeat()
            except Exception:  # noqa: BLE001 - a missed beat is retried at the next one
                continue

    async def run(self) -> None:
        """Join, then handle batches until `stop()`; a task heartbeats meanwhile; leave at the end."""
        self.stopping = False
        await self.join()
        beats = asyncio.create_task(self._heartbeats())
        try:
            while not self.stopping:
                await self.poll()
        finally:
            beats.cancel()
            await self.leave()

    async def leave(self) -> None:
        """Give the partitions back now."""
        if self.membership is not None:
            try:
                await self.client.run(self._leave_call())
            except LEASE_LOST:
                pass
            self.membership = None
