"""The synchronous client: `Chronicle(url, key)`, with `.documents`, `.agents`, `.chains`, `.events`.

Every command carries an Idempotency-Key that its retries reuse, so a command whose answer was
lost runs once. Reads wait until the read side has this client's own writes (min_position).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import httpx

from chronicle_client.calls import Call, T, Tracker
from chronicle_client.errors import raise_for_problem
from chronicle_client.models import Event
from chronicle_client.resources import Agents, Chains, Documents, Events
from chronicle_client.retry import RetryPolicy, settle

if TYPE_CHECKING:
    from chronicle_client.groups import GroupMember
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

    def __init__(self, retry: RetryPolicy | None, track_versions: bool, read_your_writes: bool) -> None:
        self.retry = retry or RetryPolicy()
        self.tracker = Tracker(track_versions, read_your_writes)
        self.documents = Documents(self.run)
        self.agents = Agents(self.run)
        self.chains = Chains(self.run)
        self.events = Events(self.run)

    def run(self, call: Call[Any]) -> Any:
        """Send one call (the sync client answers, the asyncio one returns an awaitable)."""
        raise NotImplementedError

    @property
    def position(self) -> int:
        """The highest log position this client's commands reached (what reads wait for)."""
        return self.tracker.position

    def version_of(self, stream_id: str) -> int | None:
        """The last version of a stream this client saw; If-Match sends it."""
        return self.tracker.version_of(stream_id)


class Chronicle(ClientBase):
    """A Chronicle API client (thread-safe; one per service is enough)."""

    def __init__(self, url: str | None = None, key: str | None = None, *, session_id: str | None = None,
                 retry: RetryPolicy | None = None, timeout: float = 30.0, track_versions: bool = True,
                 read_your_writes: bool = True, transport: httpx.BaseTransport | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        base, headers = http_settings(url, key, session_id)
        self.http = httpx.Client(base_url=base, headers=headers, timeout=timeout, transport=transport)
        self._sleep = sleep
        super().__init__(retry, track_versions, read_your_writes)

    def run(self, call: Call[T]) -> T:
        """Send one call, retrying what the policy allows with the same Idempotency-Key; its parsed answer."""
        headers, params = self.tracker.prepare(call)
        attempt = 0
        while True:
            attempt += 1
            response, error = None, None
            try:
                response = self.http.request(call.method, call.path, json=call.json, params=params, headers=headers)
            except httpx.TransportError as exc:
                error = exc
            wait = settle(self.retry, attempt, response, error)
            if wait is None:
                assert response is not None
                self.tracker.learn(call, response)
                raise_for_problem(response)
                return self.tracker.parse(call, response)
            self._sleep(wait)

    def subscribe(self, *, after: int = 0, types: Sequence[str] = (), stream_type: str | None = None,
                  stream_id: str | None = None, format: str = "ndjson") -> "Subscription":
        """Follow the log from after `after`: an iterator of events that reconnects where it left off."""
        from chronicle_client.subscribe import Subscription

        return Subscription(self, after=after, types=types, stream_type=stream_type, stream_id=stream_id,
                            format=format)

    def member(self, group: str, handler: Callable[[Event], Any], **options: Any) -> "GroupMember":
        """A consumer-group member that runs `handler` on each event of its partitions (see GroupMember)."""
        from chronicle_client.groups import GroupMember

        return GroupMember(self, group, handler, **options)

    def close(self) -> None:
        """Close the connections."""
        self.http.close()

    def __enter__(self) -> "Chronicle":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
