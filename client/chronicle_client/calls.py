"""A request described once, and what the client remembers between requests.

A `Call` says what to send (method, path, body, query) and how to read the answer (a model).
The sync and asyncio clients run the same calls; `Tracker` fills in the headers they share
(Idempotency-Key, If-Match from the last ETag seen, ?min_position= for read-your-writes) and
learns from each answer (the stream's new ETag, the log position a command reached).
"""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import httpx
from pydantic import BaseModel

T = TypeVar("T")


class _LastSeen:
    """The If-Match default: the stream version this client last saw, if any."""

    def __repr__(self) -> str:
        return "LAST_SEEN"


LAST_SEEN: Any = _LastSeen()


@dataclass
class Call(Generic[T]):
    """One request and the model its answer parses into (None: no body, e.g. 204)."""

    method: str
    path: str
    model: type[T] | None = None
    json: Any = None
    params: dict[str, Any] = field(default_factory=dict)
    command: bool = False  # a command: gets an Idempotency-Key, answers with ETag and position
    stream_id: str | None = None  # the stream whose version If-Match carries and the ETag updates
    if_match: int | None | _LastSeen = None
    read_your_writes: bool = False  # the route takes ?min_position=
    idempotency_key: str | None = None


def etag_version(value: str | None) -> int | None:
    """The stream version a strong ETag such as "3" names; None for a missing or weak one."""
    if not value or value.startswith("W/"):
        return None
    try:
        return int(value.strip('"'))
    except ValueError:
        return None


class Tracker:
    """The stream versions and log position this client has seen, for If-Match and min_position."""

    def __init__(self, track_versions: bool = True, read_your_writes: bool = True) -> None:
        self.track_versions = track_versions
        self.read_your_writes = read_your_writes
        self.versions: dict[str, int] = {}
        self.position = 0
        self._lock = threading.Lock()

    def version_of(self, stream_id: str) -> int | None:
        """The last version of this stream the client saw (a command's answer or a read's ETag)."""
        return self.versions.get(str(stream_id))

    def prepare(self, call: Call[Any]) -> tuple[dict[str, str], dict[str, Any]]:
        """The headers and query one call is sent with; the Idempotency-Key is fixed here, for every retry."""
        headers: dict[str, str] = {}
        params = {k: v for k, v in call.params.items() if v is not None}
        if call.command:
            call.idempotency_key = call.idempotency_key or str(uuid.uuid4())
            headers["Idempotency-Key"] = call.idempotency_key
        expected = call.if_match
        if isinstance(expected, _LastSeen):
            expected = self.version_of(call.stream_id) if (call.stream_id and self.track_versions) else None
        if expected is not None:
            headers["If-Match"] = f'"{expected}"'
        if call.read_your_writes and self.read_your_writes and self.position and "min_position" not in params:
            params["min_position"] = self.position
        return headers, params

    def learn(self, call: Call[Any], response: httpx.Response) -> None:
        """Remember the stream version (ETag) and log position an answer carries, a 412's too."""
        version = etag_version(response.headers.get("etag"))
        stream_id = call.stream_id
        if call.command and response.is_success:
            stream_id = response.json().get("stream_id", stream_id)
        if stream_id and version is not None:
            self.versions[str(stream_id)] = version
        position = response.headers.get("x-chronicle-position")
        if position and position.isdigit():
            with self._lock:
                self.position = max(self.position, int(position))

    def parse(self, call: Call[T], response: httpx.Response) -> T:
        """The answer as the call's model (a command's also says whether the server replayed it)."""
        if call.model is None or response.status_code == 204:
            return None  # type: ignore[return-value]
        body = response.json()
        if call.command and isinstance(body, dict):
            body["replayed"] = response.headers.get("idempotent-replayed") == "true"
        if isinstance(call.model, type) and issubclass(call.model, BaseModel):
            return call.model.model_validate(body)  # type: ignore[return-value]
        return body
