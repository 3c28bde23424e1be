"""The synchronous client: `Chronicle(url, key)`, with `.documents`, `.agents`, `.chains`, `.events`.

Every command carries an Idempotency-Key that its retries reuse, so a command whose answer was
lost runs once. Reads wait until the read side has this client's own writes (min_position).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Generator, Sequence
from typing import Any

import httpx

from chronicle_client.calls import Call, T, Tracker
from chronicle_client.errors import raise_for_problem
from chronicle_client.models import Event
from chronicle_client.groups import GroupMember
from chronicle_client.resources import Agents, Chains, Documents, Events
from chronicle_client.retry import RetryPolicy, settle
from chronicle_client.subscribe import Subscription


def http_settings(url: str | None, key: str | None, session_id: str | None) -> tuple[str, dict[str, str]]:
    """The base URL and default headers: arguments first, else CHRONICLE_URL and CHRONICLE_KEY."""
    base = url or os.environ.get("CHRONICLE_URL") or "http://127.0.0.1:8000"
    token = key or os.environ.get("CHRONICLE_KEY")
    headers = {"Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if session_id:
        headers["X-Session-Id"] = session_id
    return base.rstrip("/"), headers


class ClientBase:
    """What the sync and asyncio clients share: the retry policy, what they have seen, the resources."""

    feed_type: type = Subscription
    member_type: type = GroupMember
    http_type: type = httpx.Client
    default_sleep: Callable[[float], Any] = staticmethod(time.sleep)

    def __init__(self, url: str | None = None, key: str | None = None, *, session_id: str | None = None,
                 retry: RetryPolicy | None = None, timeout: float = 30.0, track_versions: bool = True,
                 read_your_writes: bool = True, transport: httpx.BaseTransport | httpx.AsyncBaseTransport | None = None,
                 sleep: Callable[[float], Any] | None = None) -> None:
        """A client of the server at `url` with API key `key` (else CHRONICLE_URL and CHRONICLE_KEY);
        `sleep` waits between retries (the client's own sleep by default)."""
        base, headers = http_settings(url, key, session_id)
        self.http = self.http_type(base_url=base, headers=headers, timeout=timeout, transport=transport)
        self._sleep = sleep or self.default_sleep
        self.retry = retry or RetryPolicy()
        self.tracker = Tracker(track_versions, read_your_writes)
        self.documents = Documents(self.run)
        self.agents = Agents(self.run)
        self.chains = Chains(self.run)
        self.events = Events(self.run)

    def run(self, call: Call[Any]) -> Any:
        """Send one call (the sync client answers, the asyncio one returns an awaitable)."""
        raise NotImplementedError

    def exchange(self, call: Call[T]) -> Generator[dict[str, Any] | float, Any, T]:
        """One call's steps without I/O: yields a request to send (a dict) or a wait (seconds), is sent
        the answer or the transport error, returns the parsed answer; both clients drive it alike."""
        headers, params = self.tracker.prepare(call)
        request = {"method": call.method, "url": call.path, "json": call.json, "params": params, "headers": headers}
        attempt = 0
        while True:
            attempt += 1
            outcome = yield request
            response = outcome if isinstance(outcome, httpx.Response) else None
            wait = settle(self.retry, attempt, response, None if response is not None else outcome)
            if wait is None:
                assert response is not None
                self.tracker.learn(call, response)
                raise_for_problem(response)
                return self.tracker.parse(call, response)
            yield wait

    @property
    def position(self) -> int:
        """The highest log position this client's commands reached (what reads wait for)."""
        return self.tracker.position

    def version_of(self, stream_id: str) -> int | None:
        """The last version of a stream this client saw; If-Match sends it."""
        return self.tracker.version_of(stream_id)

    def subscribe(self, *, after: int = 0, types: Sequence[str] = (),
                  stream_type: str | Sequence[str] | None = None, stream_id: str | Sequence[str] | None = None,
                  format: str = "ndjson", idle_timeout: float = 30.0) -> Any:
        """Follow the log from after `after`: an iterator of events (async for the asyncio client)
        that reconnects where it left off; `types`, `stream_type`, `stream_id` filter it."""
        return self.feed_type(self, after=after, types=types, stream_type=stream_type, stream_id=stream_id,
                              format=format, idle_timeout=idle_timeout)

    def member(self, group: str, handler: Callable[[Event], Any], **options: Any) -> Any:
        """A consumer-group member that runs `handler` on each event of its partitions (see groups.py);
        options: name, lease_seconds, batch, wait, heartbeat_every."""
        return self.member_type(self, group, handler, **options)


class Chronicle(ClientBase):
    """A Chronicle API client (thread-safe; one per service is enough)."""

    def run(self, call: Call[T]) -> T:
        """Send one call, retrying what the policy allows with the same Idempotency-Key; its parsed answer."""
        steps = self.exchange(call)
        outcome: httpx.Response | Exception | None = None
        try:
            while True:
                outcome = self.step(steps.send(outcome))
        except StopIteration as done:
            return done.value

    def step(self, step: dict[str, Any] | float) -> httpx.Response | Exception | None:
        """Do one step of an exchange: send a request (its response, or the transport error), or wait."""
        if not isinstance(step, dict):
            return self._sleep(step)
        try:
            return self.http.request(**step)
        except httpx.TransportError as exc:
            return exc

    def close(self) -> None:
        """Close the connections."""
        self.http.close()

    def __enter__(self) -> "Chronicle":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
