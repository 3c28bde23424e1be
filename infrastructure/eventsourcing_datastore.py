"""The datastore Chronicle's eventsourcing recorders share, their common base, and error mapping.

One ChronicleDatastore (a pool and an EventStore) is shared by a factory's recorders
(infrastructure/eventsourcing_recorders.py, which re-exports these names).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import Any, NamedTuple
from uuid import UUID

import psycopg
import psycopg_pool

from domain.event_types import EventTypeRegistry
from eventsourcing.persistence import (
    DatabaseError,
    DataError,
    IntegrityError,
    InterfaceError,
    OperationalError,
    PersistenceError,
    ProgrammingError,
)
from eventsourcing.utils import TopicError, resolve_topic
from infrastructure.config import Settings
from infrastructure.db import create_pool
from infrastructure.errors import ConcurrencyConflict, EventIdReused
from infrastructure.event_store import DEFAULT_LOG, EventMetadata, EventStore
from infrastructure.eventsourcing_mapper import state_from_payload
from infrastructure.personal_data import reveal_payloads

# The stream type of events with no registered model (the library's own event classes).
LIBRARY_STREAM_TYPE = "eventsourcing"
# Larger than any stream version: the open upper end of a version range.
MAX_VERSION = 2**63 - 1


class CommandEvent(NamedTuple):
    """Where one event a command appended landed: its stream, version and log position."""

    stream_id: str
    version: int
    position: int


def version_bounds(gt: int | None, lte: int | None) -> tuple[int, int]:
    """(gt, lte] with open ends filled in, so the query is always an index range.

    A `(%s IS NULL OR ...)` condition makes a prepared statement's generic plan walk the
    whole stream, so reads would cost time in proportion to the stream's length.
    """
    return (-1 if gt is None else gt, MAX_VERSION if lte is None else lte)


def id_value(stream_id: str) -> UUID | str:
    """A stream id as the library expects it: a UUID when it is one, else the text."""
    try:
        value = UUID(stream_id)
    except ValueError:
        return stream_id
    return value if str(value) == stream_id else stream_id


# -- errors -----------------------------------------------------------------------------------


# Each database error as the library's, the first class that matches (subclasses first).
_LIBRARY_ERRORS: tuple[tuple[type[Exception], type[PersistenceError]], ...] = (
    (psycopg_pool.PoolTimeout, OperationalError),
    (psycopg.IntegrityError, IntegrityError),
    (psycopg.OperationalError, OperationalError),
    (psycopg.InterfaceError, InterfaceError),
    (psycopg.DataError, DataError),
    (psycopg.ProgrammingError, ProgrammingError),
    (psycopg.DatabaseError, DatabaseError),
    (psycopg.Error, PersistenceError),
)


class library_errors:  # lower case: used as the function it was, `with library_errors():`
    """Raise the library's persistence errors for database and store errors.

    A version clash (ConcurrencyConflict, a reused event id, a unique violation) becomes
    IntegrityError, so the library's optimistic concurrency holds. A class, not a generator
    context manager: every save and read enters one, and this costs a fraction of that.
    """

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if isinstance(exc, (ConcurrencyConflict, EventIdReused)):
            raise IntegrityError(str(exc)) from exc
        if isinstance(exc, (psycopg_pool.PoolTimeout, psycopg.Error)):
            library_error = next(ours for theirs, ours in _LIBRARY_ERRORS if isinstance(exc, theirs))
            raise library_error(str(exc)) from exc


# -- the datastore ----------------------------------------------------------------------------


class ChronicleDatastore:
    """One connection pool and one EventStore, shared by a factory's recorders."""

    def __init__(self, url: str, settings: Settings, registry: EventTypeRegistry, *, name: str) -> None:
        self.url = url
        self.settings = settings
        self.registry = registry
        self.pool = create_pool(url, settings, name=name[:60])
        self.store = EventStore(self.pool, registry, settings, accept_unregistered_types=True)
        self._stored_types: dict[str, str] = {}

    def event_metadata(self, metadata: dict[str, Any]) -> EventMetadata | dict[str, Any]:
        """A save's metadata validated once for all its streams' appends, as the store would; as given if invalid.

        Not cached: a command's metadata carries its own correlation id, so hardly any repeats.
        The store names what is wrong in metadata it refuses.
        """
        try:
            return EventMetadata.model_validate(metadata)
        except ValueError:  # the store raises it again, naming the field
            return metadata

    def stored_type(self, topic: str) -> str:
        """The `type` column for a topic: a registered model's stable name, else the topic.

        Lets projections filter by either the Python topic or the stable name.
        """
        if topic in self.registry:
            return topic
        known = self._stored_types.get(topic)
        if known is None:
            known = topic
            if ":" in topic:
                try:
                    known = self.registry.name_of(resolve_topic(topic)) or topic
                except (TopicError, ImportError, AttributeError):
                    known = topic
            self._stored_types[topic] = known
        return known

    def payload_states(self, conn: psycopg.Connection, rows: list[dict[str, Any]]) -> list[bytes]:
        """Each row's payload as the library's state bytes: upcast to its current schema, its
        personal fields decrypted (erased when their subject is forgotten)."""
        payloads = [self.registry.upcast(row["type"], row["schema_version"], row["payload"])[1] for row in rows]
        reveal_payloads(conn, self.registry, zip((row["type"] for row in rows), payloads))
        return [state_from_payload(payload) for payload in payloads]

    def close(self) -> None:
        """Release the pool's connections."""
        self.pool.close()


class _ChronicleRecorder:
    """What every Chronicle recorder knows: its datastore, its log and its tracker name."""

    def __init__(
        self, datastore: ChronicleDatastore, *, log_name: str = DEFAULT_LOG, tracker: str = DEFAULT_LOG
    ) -> None:
        self.datastore = datastore
        self.log_name = log_name
        self.tracker = tracker

    @contextmanager
    def transaction(self) -> Iterator[psycopg.Connection[Any]]:
        """A connection in one transaction (dict rows), with the library's errors.

        Materialised views write their rows and `insert_tracking_on` in one of these.
        """
        with library_errors(), self.datastore.store.transaction() as conn:
            yield conn
