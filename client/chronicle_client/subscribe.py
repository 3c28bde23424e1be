"""Following the log: `GET /v1/subscribe` as an iterator that resumes from its last position.

The server sends history up to the present, then live events, in position order, with
heartbeats. When the connection drops (or goes silent past `idle_timeout`), the iterator
reconnects after the last position it yielded (or an NDJSON heartbeat's, which the server has
read through), so it misses nothing and yields nothing twice.
NDJSON is the default; `format="sse"` reads Server-Sent Events and resumes with Last-Event-ID.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import httpx

from chronicle_client.errors import error_for
from chronicle_client.models import Event
from chronicle_client.retry import retryable_error, retryable_response, settle

if TYPE_CHECKING:
    from chronicle_client.aio import AsyncChronicle
    from chronicle_client.client import Chronicle

ACCEPT = {"ndjson": "application/x-ndjson", "sse": "text/event-stream"}


def _values(value: str | Sequence[str] | None) -> list[str]:
    """A filter's values: one given as a string, or several."""
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


class FeedParser:
    """Turns the feed's lines into events, one line at a time (NDJSON or SSE framing)."""

    def __init__(self, format: str) -> None:
        self.format = format
        self.heartbeat_position: int | None = None
        self._data: list[str] = []

    def line(self, line: str) -> Event | None:
        """The event this line completes, if any; heartbeats and SSE comments are noted and skipped."""
        if self.format == "ndjson":
            if not line.strip():
                return None
            item = json.loads(line)
            if item.get("heartbeat"):
                self.heartbeat_position = item.get("position")
                return None
            return Event.model_validate(item)
        if line == "":  # an SSE frame ends at a blank line
            data, self._data = self._data, []
            return Event.model_validate(json.loads("\n".join(data))) if data else None
        if line.startswith(":"):
            return None  # a comment: the heartbeat
        name, _, value = line.partition(":")
        if name == "data":
            self._data.append(value[1:] if value.startswith(" ") else value)
        return None


class _Feed:
    """What both iterators share: the request for the next connection, and the position reached."""

    def __init__(self, *, after: int, types: Sequence[str], stream_type: str | Sequence[str] | None,
                 stream_id: str | Sequence[str] | None, format: str, idle_timeout: float = 30.0) -> None:
        if format not in ACCEPT:
            raise ValueError(f"format must be one of {sorted(ACCEPT)}, not {format!r}")
        self.position = after
        self.types = list(types)
        self.stream_types = _values(stream_type)
        self.stream_ids = _values(stream_id)
        self.format = format
        self.timeout = httpx.Timeout(10.0, read=idle_timeout)
        self.closed = False
        self.connections = 0

    def request(self) -> dict[str, Any]:
        """The next connection's query and headers: after the last position yielded."""
        params: dict[str, Any] = {"type": self.types or None, "stream_type": self.stream_types or None,
                                  "stream_id": self.stream_ids or None}
        headers = {"Accept": ACCEPT[self.format]}
        if self.format == "sse" and self.position:
            headers["Last-Event-ID"] = str(self.position)
        else:
            params["after"] = self.position
        return {"params": {k: v for k, v in params.items() if v is not None}, "headers": headers,
                "timeout": self.timeout}

    def accept(self, event: Event | None, parser: FeedParser) -> bool:
        """True for an event past the position (which it advances to); a repeat is dropped.

        A heartbeat's position advances it too: the server has sent every match up to there.
        """
        if parser.heartbeat_position is not None:
            self.position = max(self.position, parser.heartbeat_position)
            parser.heartbeat_position = None
        if event is None or event.position <= self.position:
            return False
        self.position = event.position
        return True

    def refused(self, response: httpx.Response) -> bool:
        """True when the server refused for good (a 4xx): the caller raises its typed error."""
        return response.status_code >= 400 and not retryable_response(response)

    def close(self) -> None:
        """Stop at the next line the server sends (a heartbeat at the latest)."""
        self.closed = True


class Subscription(_Feed):
    """A blocking iterator of events; break out of the loop or call close() to stop."""

    def __init__(self, client: "Chronicle", **options: Any) -> None:
        super().__init__(**options)
        self.client = client

    def __iter__(self) -> Iterator[Event]:
        failures = 0
        while not self.closed:
            response, error = None, None
            parser = FeedParser(self.format)
            try:
                with self.client.http.stream("GET", "/v1/subscribe", **self.request()) as response:
                    if response.status_code >= 400:
                        response.read()
                        if self.refused(response):
                            raise error_for(response)
                    else:
                        self.connections += 1
                        failures = 0
                        for line in response.iter_lines():
                            event = parser.line(line)
                            if self.accept(event, parser):
                                yield event  # type: ignore[misc]
                            if self.closed:
                                return
                        continue  # the server ended the stream: reconnect
            except httpx.TransportError as exc:
                if not retryable_error(exc):
                    raise
                error = exc
            failures += 1
            self.client._sleep(settle(self.client.retry, failures, response, error) or 0)

    def __enter__(self) -> "Subscription":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncSubscription(_Feed):
    """An async iterator of events; break out of the loop or call close() to stop."""

    def __init__(self, client: "AsyncChronicle", **options: Any) -> None:
        super().__init__(**options)
        self.client = client

    async def __aiter__(self) -> AsyncIterator[Event]:
        failures = 0
        while not self.closed:
            response, error = None, None
            parser = FeedParser(self.format)
            try:
                async with self.client.http.stream("GET", "/v1/subscribe", **self.request()) as response:
                    if response.status_code >= 400:
                        await response.aread()
                        if self.refused(response):
                            raise error_for(response)
                    else:
                        self.connections += 1
                        failures = 0
                        async for line in response.aiter_lines():
                            event = parser.line(line)
                            if self.accept(event, parser):
                                yield event  # type: ignore[misc]
                            if self.closed:
                                return
                        continue
            except httpx.TransportError as exc:
                if not retryable_error(exc):
                    raise
                error = exc
            failures += 1
            await self.client._sleep(settle(self.client.retry, failures, response, error) or 0)
