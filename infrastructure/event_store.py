"""The PostgreSQL event store: optimistic appends to streams, and a gap-free global log.

An append is one statement (infrastructure/append_statement.py) and one round trip, or, made at
the same moment as other threads' one-event appends, a share of one (append_groups.py); reads go
through the SQL functions of schema/0001_event_store.sql. Payloads are validated against the
typed-event registry before anything is written. The store's vocabulary is in
infrastructure/store_types.py, its appends in store_appends.py, its reads in store_reads.py;
every public name is importable from here.
"""

from __future__ import annotations

from collections.abc import Callable

from psycopg_pool import ConnectionPool

from domain.event_types import EventTypeRegistry
from domain.event_types import registry as default_registry
from infrastructure import store_types
from infrastructure.append_groups import AppendGroups
from infrastructure.config import Settings, get_settings
from infrastructure.errors import ConcurrencyConflict, EventIdReused, InvalidAppend
from infrastructure.notifier import CommitNotifier
from infrastructure.store_appends import StoreAppends
from infrastructure.store_reads import StoreReads
from infrastructure.store_types import *  # the store's vocabulary, re-exported

__all__ = ["ConcurrencyConflict", "EventIdReused", "EventStore", "InvalidAppend"] + store_types.__all__


class EventStore(StoreAppends, StoreReads):
    """Appends to streams and reads the log, through one connection pool."""

    def __init__(
        self,
        pool: ConnectionPool,
        registry: EventTypeRegistry = default_registry,
        settings: Settings | None = None,
        *,
        accept_unregistered_types: bool = False,
    ) -> None:
        self.pool = pool
        self.registry = registry
        self.settings = settings or get_settings()
        # The eventsourcing persistence module stores library events under their topic,
        # with no registered model: allowed only when asked for. Registered types are
        # always validated.
        self.accept_unregistered_types = accept_unregistered_types
        # Called with each committed append's result, after its commit (e.g. worker wake-ups).
        # A failing listener is the listener's problem: it never undoes the append.
        self.after_append: list[Callable[[AppendResult], None]] = []
        # committed() wakes readers after each commit, one NOTIFY per burst of commits.
        self.notifier = CommitNotifier(pool, NOTIFY_CHANNEL)
        # One-event appends of concurrent threads, written together (infrastructure/append_groups.py).
        group_max = self.settings.chronicle_append_group_max
        self.groups = AppendGroups(pool, group_max, self.settings.chronicle_append_groups) if group_max > 1 else None

