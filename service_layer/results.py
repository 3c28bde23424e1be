"""What the workspace's service answers: command results, a stream at a version, diffs, history."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from domain.diff import FieldChange


@dataclass(frozen=True)
class CommandResult:
    """Where a command left its stream: the stream's version and the log position it reached.

    `appended` counts the events written (0 for a no-op or a repeated command id);
    `duplicate` is True when the command id had been handled before (this is that first result).
    `position` is the log position of the last event appended, None if nothing was.
    """

    stream_id: str
    version: int
    position: int | None
    appended: int
    duplicate: bool = False


@dataclass(frozen=True)
class StateAtVersion:
    """A stream's state at one version, as the event contract's `state` describes it.

    `modified_at` is the timestamp of the event that produced that version.
    """

    stream_id: str
    stream_type: str
    version: int
    modified_at: datetime
    state: dict[str, Any]


@dataclass(frozen=True)
class StreamDiff:
    """What changed in a stream between two versions, field by field."""

    stream_id: str
    from_version: int
    to_version: int
    changes: list[FieldChange]


@dataclass(frozen=True)
class HistoryEntry:
    """One stored event of a stream: its version, type name, timestamp and payload."""

    version: int
    type: str
    timestamp: datetime
    payload: dict[str, Any]
