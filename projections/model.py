"""What a projector is: handlers per event type over per-stream rows of its tables.

Pure Python, no SQL: the engine loads the rows of a batch's streams, calls the handlers, and
writes back the rows they changed in a few set-based statements.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

from infrastructure.partition_reads import Event

Row = dict[str, Any]


@dataclass(frozen=True)
class StateTable:
    """A current-state table: rows belong to a stream; `key` None means one row per stream."""

    name: str
    stream_column: str
    key: str | None = None


@dataclass(frozen=True)
class LogTable:
    """A history table: rows are only added; a replayed event overwrites its own row."""

    name: str
    conflict: tuple[str, ...]
    overwrite: bool = True
    # A row's key (its conflict columns' values), read in C: a batch takes it for every row.
    key_of: Callable[[Row], Any] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key_of", itemgetter(*self.conflict))


class StreamRows:
    """The rows of one stream in the projector's state tables, as handlers change them."""

    __slots__ = ("stream_id", "tables", "dirty")

    def __init__(self, stream_id: str, tables: dict[str, dict[Any, Row]]) -> None:
        self.stream_id = stream_id
        self.tables = tables
        self.dirty: set[str] = set()

    def one(self, table: str) -> Row | None:
        """The stream's single row in `table`, or None."""
        return self.tables[table].get(None)

    def set_one(self, table: str, row: Row | None) -> None:
        """Replace (or, with None, remove) the stream's single row in `table`."""
        rows = self.tables[table]
        rows.clear()
        if row is not None:
            rows[None] = row
        self.dirty.add(table)

    def touch(self, table: str, e: Event) -> Row | None:
        """Stamp the stream's single row in `table` with this event (its time, id, version, position).

        The stamped copy, or None when the stream has no live row there.
        """
        row = self.one(table)
        if row is None:
            return None
        row = dict(row, updated_at=e.recorded_at, **e.shape())
        self.set_one(table, row)
        return row

    def many(self, table: str) -> dict[Any, Row]:
        """The stream's rows in `table` by key, for reading and changing in place."""
        self.dirty.add(table)
        return self.tables[table]


class Output:
    """Rows a batch adds to history tables, last one per key winning."""

    __slots__ = ("rows",)

    def __init__(self) -> None:
        self.rows: dict[str, dict[Any, Row]] = {}

    def add(self, table: LogTable, row: Row) -> None:
        self.rows.setdefault(table.name, {})[table.key_of(row)] = row


Handler = Callable[[StreamRows, Event, Output], None]


@dataclass
class Projector:
    """A read model: its stream types, tables and one handler per event type."""

    name: str
    stream_types: tuple[str, ...]
    state_tables: tuple[StateTable, ...]
    log_tables: tuple[LogTable, ...]
    handlers: dict[str, Handler] = field(default_factory=dict)

    @property
    def tables(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.state_tables) + tuple(t.name for t in self.log_tables)

    def on(self, *types: str) -> Callable[[Handler], Handler]:
        """Decorator: register a handler for event types."""

        def register(fn: Handler) -> Handler:
            for type_name in types:
                self.handlers[type_name] = fn
            return fn

        return register


def actor(event: Event) -> tuple[str | None, str | None, str | None]:
    """(actor id, actor type, session id) from an event's metadata."""
    meta = event.metadata or {}
    return meta.get("actor_id"), meta.get("actor_type"), meta.get("session_id")


def content_hash(content: Any, body: Any) -> str:
    """The key a body is stored under: sha256 of its canonical JSON.

    A text body without a JSON one (most documents) spells that JSON directly, as the general
    form would: ten times cheaper for a catch-up, which hashes every version it projects.
    """
    if body is None and (content is None or isinstance(content, str)):
        text = '{"body":null,"content":' + json.dumps(content) + "}"
    else:
        text = json.dumps({"content": content, "body": body}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def pick(payload: Mapping[str, Any], row: Row, *names: str) -> None:
    """Copy the named fields present in `payload` onto `row`."""
    for name in names:
        if name in payload:
            row[name] = payload[name]
