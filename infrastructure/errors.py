"""Errors the event store raises. Each says what is wrong; `field` names the offending input."""

from __future__ import annotations

from domain.event_types import EventTypeError, InvalidEventPayload, UnknownEventType

__all__ = [
    "StoreError",
    "ConcurrencyConflict",
    "EventIdReused",
    "InvalidAppend",
    "EventTypeError",
    "InvalidEventPayload",
    "UnknownEventType",
]


class StoreError(Exception):
    code = "store_error"
    field: str | None = None


class ConcurrencyConflict(StoreError):
    """The stream is not at the version the append expected."""

    code = "version_conflict"

    def __init__(self, stream_id: str, expected: object, actual: int) -> None:
        super().__init__(
            f"stream {stream_id!r} is at version {actual}, the append expected {expected}"
        )
        self.stream_id = stream_id
        self.expected = expected
        self.actual = actual


class EventIdReused(StoreError):
    """An event id that is already stored, sent again with different content."""

    code = "event_id_reused"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.field = "event_id"


class InvalidAppend(StoreError):
    """The append itself is malformed: bad stream id, too many events, too large a payload."""

    code = "invalid_append"

    def __init__(self, message: str, *, field: str) -> None:
        super().__init__(message)
        self.field = field
