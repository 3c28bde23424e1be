"""The event store's vocabulary: names, expected versions, events to append and as recorded.

Shared by the store's appends (infrastructure/store_appends.py) and reads
(infrastructure/store_reads.py); `infrastructure.event_store` re-exports every name.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any, Literal, NamedTuple
from uuid import UUID

import psycopg
from pydantic import BaseModel, ConfigDict

from domain.bounds import ContextId
from domain.ids import uuid7

# Every name here, re-exported by infrastructure.event_store.
__all__ = [
    "ANY", "DEFAULT_LOG", "IDLE", "JSON_NUL", "LOG_NAME", "MAX_METADATA_BYTES", "NO_STREAM", "NOTIFY_CHANNEL",
    "STREAM_ID", "AppendResult", "EncodedPayload", "EventMetadata", "ExpectedVersion", "LogBlocker", "NewEvent",
    "RecordedEvent", "StreamExistence",
]

STREAM_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@/+=-]{0,199}$")
LOG_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,99}$")
# A JSON-escaped NUL (\u0000 not itself escaped): jsonb refuses it, so refuse it up front.
JSON_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")
NOTIFY_CHANNEL = "chronicle_events"
MAX_METADATA_BYTES = 65_536
DEFAULT_LOG = "chronicle"
IDLE = psycopg.pq.TransactionStatus.IDLE


class StreamExistence(Enum):
    """Expected versions that are not a number."""

    ANY = "any"
    NO_STREAM = "no_stream"


ANY = StreamExistence.ANY
NO_STREAM = StreamExistence.NO_STREAM
ExpectedVersion = int | StreamExistence


class EventMetadata(BaseModel):
    """Who did it, in which session, and why: stored in every event's `metadata` column."""

    model_config = ConfigDict(extra="allow", frozen=True)

    # Each id is in a btree expression index (and session/actor in snapshot rows): bounded text.
    actor_id: ContextId | None = None
    actor_type: Literal["user", "agent", "service", "system"] | None = None
    session_id: ContextId | None = None
    correlation_id: ContextId | None = None
    causation_id: ContextId | None = None
    command_id: ContextId | None = None
    # The data subject whose key encrypts the personal fields (default: the stream's, else the actor).
    subject_id: ContextId | None = None


class EncodedPayload(dict):  # type: ignore[type-arg]
    """An unregistered type's payload with its JSON `text`, which encoding the payload would give again.

    The store appends the text as it is (the library's recorder decoded it to check it).
    """

    __slots__ = ("text",)

    def __init__(self, payload: dict[str, Any], text: str) -> None:
        super().__init__(payload)
        self.text = text


@dataclass(frozen=True)
class NewEvent:
    """An event to append: its type name, payload, and an id that makes retries idempotent."""

    type: str
    payload: Mapping[str, Any] | BaseModel
    event_id: UUID = field(default_factory=uuid7)
    # Fields validated with the payload but stored in columns (originator id and version).
    envelope: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class RecordedEvent:
    """An event as stored, its payload upcast to the current schema version."""

    position: int
    event_id: UUID
    stream_id: str
    stream_type: str
    version: int
    type: str
    schema_version: int
    payload: dict[str, Any]
    metadata: dict[str, Any]
    log_name: str
    recorded_at: datetime


class AppendResult(NamedTuple):
    """Where an append landed: the stream's new version and each event's position.

    A named tuple rather than a frozen dataclass: one is made per append, at a third of the cost.
    """

    stream_id: str
    version: int
    positions: tuple[int, ...]
    duplicate: bool = False
    stream_type: str | None = None

    @property
    def first_version(self) -> int:
        return self.version - len(self.positions) + 1

    @property
    def position(self) -> int:
        return self.positions[-1]


@dataclass(frozen=True)
class LogBlocker:
    """An open transaction holding readers back at `held_position`."""

    pid: int
    held_position: int
    xact_start: datetime | None
    state: str | None
    application_name: str | None
    query: str | None

