"""The event store's appends: validate, append in one statement, find retries, refuse conflicts.

EventStore (infrastructure/event_store.py) is this and StoreReads over one connection pool.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, NamedTuple
from uuid import UUID

import psycopg
from psycopg import errors as pg_errors
from psycopg.rows import tuple_row
from psycopg_pool import ConnectionPool
from pydantic import BaseModel
from pydantic_core import from_json, to_json

from domain.event_types import EventTypeRegistry
from domain.personal import personal_paths
from infrastructure import metrics
from infrastructure.append_checks import (
    check_json,
    describe,
    expected_kind,
    metadata_json,
    unregistered_payload,
)
from infrastructure.append_groups import ALONE, AppendGroups
from infrastructure.append_statement import APPEND_SQL, array_literal
from infrastructure.config import Settings
from infrastructure.errors import ConcurrencyConflict, EventIdReused, InvalidAppend
from infrastructure.log_keys import events_by_id
from infrastructure.notifier import CommitNotifier
from infrastructure.personal_data import WriteKeyUnknown, keyring, subject_of
from infrastructure.store_types import (
    ANY,
    DEFAULT_LOG,
    IDLE,
    LOG_NAME,
    MAX_METADATA_BYTES,
    STREAM_ID,
    AppendResult,
    EventMetadata,
    ExpectedVersion,
    NewEvent,
)

logger = logging.getLogger("infrastructure.event_store")


class StoreAppends:
    """Appends to streams: one statement per append, checked against the expected version."""

    pool: ConnectionPool
    registry: EventTypeRegistry
    settings: Settings
    accept_unregistered_types: bool
    after_append: list[Callable[[AppendResult], None]]
    notifier: CommitNotifier
    groups: AppendGroups | None  # None: every append is a statement and a transaction of its own

    # -- writing ---------------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[psycopg.Connection]:
        """A connection in one transaction, for appends to several streams at once.

        The caller passes the results of its `append_on` calls to `committed` after this exits.
        Inside it, a retry is found before it is appended (a unique violation would end the
        caller's transaction), so appends with expected version ANY cost one more round trip.
        """
        with self.pool.connection() as conn, conn.transaction():
            yield conn

    def committed(self, results: Sequence[AppendResult], log_name: str = DEFAULT_LOG) -> None:
        """Wake readers of `log_name` and tell the after-append listeners about committed appends.

        Retries (duplicate results) wrote nothing, so they wake nobody. Listeners' errors are logged.
        """
        results = [result for result in results if not result.duplicate]
        if not results:
            return
        self.notifier.poke(log_name)
        for listener in self.after_append:
            for result in results:
                try:
                    listener(result)
                except Exception:
                    logger.exception("after-append listener %r failed", listener)

    def append(
        self,
        stream_id: str,
        expected_version: ExpectedVersion,
        events: Sequence[NewEvent],
        metadata: EventMetadata | Mapping[str, Any] | None = None,
        *,
        stream_type: str | None = None,
        log_name: str = DEFAULT_LOG,
    ) -> AppendResult:
        """Append events to one stream, all or nothing, if it is at `expected_version`.

        Raises ConcurrencyConflict on a version mismatch; a retry of stored event ids
        returns the first append's result and writes nothing.
        """
        started = time.perf_counter()
        result = self.commit_append(stream_id, expected_version, events, metadata,
                                    stream_type=stream_type, log_name=log_name)
        metrics.APPEND_SECONDS.observe(time.perf_counter() - started)
        self.committed([result], log_name)
        return result

    def commit_append(
        self,
        stream_id: str,
        expected_version: ExpectedVersion,
        events: Sequence[NewEvent],
        metadata: EventMetadata | Mapping[str, Any] | None = None,
        *,
        stream_type: str | None = None,
        log_name: str = DEFAULT_LOG,
    ) -> AppendResult:
        """`append` in a transaction of its own, committed when this returns; the caller wakes readers.

        One event at an expected version (or to a new stream) joins the appends other threads
        make at the same moment, in one statement (infrastructure/append_groups.py).
        """
        if self.groups is not None and len(events) == 1 and expected_version is not ANY:
            prepared = self._prepare_for_group(stream_id, expected_version, events, metadata, stream_type, log_name)
            outcome = self.groups.append(prepared.params)
            if type(outcome) is tuple:
                metrics.events_appended(prepared.stream_type).inc()
                return AppendResult(stream_id, outcome[1], (outcome[0],), stream_type=prepared.stream_type)
            with self.pool.connection() as conn:
                if outcome == ALONE:
                    return self._append_prepared(conn, prepared, expected_version)
                return self._refusal(conn, prepared, expected_version)
        with self.pool.connection() as conn:
            return self.append_on(conn, stream_id, expected_version, events, metadata,
                                  stream_type=stream_type, log_name=log_name)

    def _prepare_for_group(
        self, stream_id: str, expected_version: ExpectedVersion, events: Sequence[NewEvent],
        metadata: EventMetadata | Mapping[str, Any] | None, stream_type: str | None, log_name: str,
    ) -> _PreparedAppend:
        """`_prepare` with no connection held, so the append can wait for its group without one.

        Personal fields are encrypted under a key this process has cached; the first write of a
        stream or subject asks the database for it on a connection of its own, as alone.
        """
        try:
            return self._prepare(None, stream_id, expected_version, events, metadata, stream_type, log_name)
        except WriteKeyUnknown:
            with self.pool.connection() as conn:
                return self._prepare(conn, stream_id, expected_version, events, metadata, stream_type, log_name)

    def append_on(
        self,
        conn: psycopg.Connection,
        stream_id: str,
        expected_version: ExpectedVersion,
        events: Sequence[NewEvent],
        metadata: EventMetadata | Mapping[str, Any] | None = None,
        *,
        stream_type: str | None = None,
        log_name: str = DEFAULT_LOG,
    ) -> AppendResult:
        """`append` on a given connection, so a caller's transaction can hold several.

        The caller wakes readers and listeners with `committed` once its transaction commits.
        """
        prepared = self._prepare(conn, stream_id, expected_version, events, metadata, stream_type, log_name)
        return self._append_prepared(conn, prepared, expected_version)

    def _append_prepared(
        self, conn: psycopg.Connection, prepared: _PreparedAppend, expected_version: ExpectedVersion
    ) -> AppendResult:
        """Run a validated append's statement on `conn`; find a retry, or refuse a conflict."""
        stream_id = prepared.stream_id
        # On an autocommit connection the statement is its own transaction; inside a caller's
        # transaction any error aborts the whole transaction, so a retry must be found first.
        in_caller_transaction = not conn.autocommit or conn.pgconn.transaction_status != IDLE
        if in_caller_transaction and expected_version is ANY and _stored(conn, prepared.event_ids):
            return self._original_result(conn, prepared)
        try:
            with conn.cursor(row_factory=tuple_row) as cur:  # tuples: cheaper than dicts per call
                rows = cur.execute(prepared.statement, prepared.params).fetchall()
        except pg_errors.UniqueViolation as exc:
            # A retry whose claim succeeded (expected ANY, or a version it happens to match)
            # fails on the unique event id: nothing was written.
            if exc.diag.constraint_name != "events_event_id_key" or in_caller_transaction:
                raise
            return self._original_result(conn, prepared)
        if rows:
            if len(rows) > 1:
                rows.sort()  # (position, version): both follow the events' order
            metrics.events_appended(prepared.stream_type).inc(len(rows))
            return AppendResult(
                stream_id, rows[-1][1], tuple(position for position, _ in rows), stream_type=prepared.stream_type
            )
        return self._refusal(conn, prepared, expected_version)

    def _refusal(
        self, conn: psycopg.Connection, prepared: _PreparedAppend, expected_version: ExpectedVersion
    ) -> AppendResult:
        """Why an append wrote nothing: a retry (its original result), another type, or a conflict."""
        with conn.cursor(row_factory=tuple_row) as cur:
            # The stream as it is now, and whether these event ids are stored. Planned for each
            # call (prepare=False), as in _stored.
            cur.execute(
                f"SELECT s.version, s.stream_type, EXISTS ({events_by_id('1', '= ANY(%s)')})"
                " FROM (SELECT) AS one LEFT JOIN streams s ON s.stream_id = %s",
                (prepared.event_ids, prepared.stream_id),
                prepare=False,
            )
            version, known_type, stored = cur.fetchone()
        if stored:
            return self._original_result(conn, prepared)
        if known_type is not None and known_type != prepared.stream_type:
            raise InvalidAppend(
                f"stream {prepared.stream_id} is a {known_type} stream, not a {prepared.stream_type} stream",
                field="stream_type",
            )
        metrics.CONFLICTS.inc()
        raise ConcurrencyConflict(prepared.stream_id, describe(expected_version), version or 0)

    def _prepare(
        self,
        conn: psycopg.Connection | None,  # None: personal fields only under cached keys (_prepare_for_group)
        stream_id: str,
        expected_version: ExpectedVersion,
        events: Sequence[NewEvent],
        metadata: EventMetadata | Mapping[str, Any] | None,
        stream_type: str | None,
        log_name: str,
    ) -> _PreparedAppend:
        """Validate an append and build its statement's parameters; raise before anything is written.

        Lean on purpose: with concurrent writer threads, each microsecond of Python here costs
        several of CPU (measured with bench/append.py), so one event skips the array literals.
        """
        if not isinstance(stream_id, str) or not STREAM_ID.match(stream_id):
            raise InvalidAppend(
                f"stream id {str(stream_id)[:80]!r} must be 1-200 letters, digits or ._:@/+=-",
                field="stream_id",
            )
        if log_name != DEFAULT_LOG and not LOG_NAME.match(log_name):
            raise InvalidAppend(f"log name {log_name[:80]!r} is not valid", field="log_name")
        kind, expected = expected_kind(expected_version)
        if not events:
            raise InvalidAppend("an append needs at least one event", field="events")
        limit = self.settings.chronicle_max_events_per_append
        if len(events) > limit:
            raise InvalidAppend(f"an append holds at most {limit} events", field="events")

        types, versions, payloads, ids = [], [], [], []
        stream_types = set()
        max_bytes = self.settings.chronicle_max_payload_bytes
        # Library topics have no registered model: accepted unvalidated only when asked for.
        find = self.registry.find if self.accept_unregistered_types else self.registry.get
        for index, event in enumerate(events):
            event_type = find(event.type)
            if event_type is None:
                text, schema_version = unregistered_payload(index, event, stream_type), 1
            else:
                stream_types.add(event_type.stream_type)
                schema_version = event_type.schema_version
                text = event_type.payload_json(event.payload, event.envelope)
            check_json(text, max_bytes, index)
            if event_type is not None and personal_paths(event_type.model):
                text = _concealed(conn, text, event_type.model, stream_id, metadata, event.event_id)
            if not isinstance(event.event_id, UUID):
                raise InvalidAppend(f"event {index} event_id must be a UUID", field=f"events.{index}.event_id")
            types.append(event.type)
            versions.append(schema_version)
            payloads.append(text)
            ids.append(event.event_id)
        if len(ids) > 1 and len(set(ids)) != len(ids):
            raise InvalidAppend("an append repeats an event_id", field="events.event_id")
        if stream_type is None:
            if len(stream_types) > 1:
                raise InvalidAppend(
                    f"events of several stream types {sorted(stream_types)} in one stream", field="events.type"
                )
            stream_type = stream_types.pop()
        meta_text = metadata_json(metadata)
        check_json(meta_text, MAX_METADATA_BYTES)

        if len(ids) == 1:
            events_params: tuple[Any, ...] = (ids[0], types[0], versions[0], payloads[0])
        else:
            # Array literals built here: psycopg's generic list adaptation costs more client CPU.
            events_params = (
                array_literal(map(str, ids)), array_literal(types),
                array_literal(map(str, versions)), array_literal(payloads),
            )
        params = (kind, stream_id, stream_type, expected, meta_text, log_name, *events_params)
        return _PreparedAppend(stream_id, stream_type, ids, types, payloads, APPEND_SQL[len(ids) == 1], params)

    def _original_result(self, conn: psycopg.Connection, prepared: _PreparedAppend) -> AppendResult:
        """The result of the append that first stored these event ids, if it was the same."""
        rows = conn.execute(
            events_by_id("e.event_id, e.stream_id, e.version, e.type, e.payload, e.position", "= ANY(%s)")
            + " ORDER BY e.position",
            (prepared.event_ids,),
            prepare=False,  # as in _stored
        ).fetchall()
        stored = {row["event_id"]: row for row in rows}
        for event_id, type_name, payload in zip(prepared.event_ids, prepared.types, prepared.payloads):
            row = stored.get(event_id)
            if (
                row is None
                or row["stream_id"] != prepared.stream_id
                or row["type"] != type_name
                or row["payload"] != json.loads(payload)
            ):
                raise EventIdReused(
                    f"event id {event_id} is already stored with different content"
                    if row is not None
                    else f"some of these event ids are already stored, {event_id} is not (or only in an archived segment)"
                )
        return AppendResult(prepared.stream_id, rows[-1]["version"], tuple(r["position"] for r in rows), duplicate=True)


class _PreparedAppend(NamedTuple):
    """A validated append: what the refusal and retry paths compare, and its statement."""

    stream_id: str
    stream_type: str
    event_ids: list[UUID]
    types: list[str]
    payloads: list[str]
    statement: str
    params: tuple[Any, ...]


def _concealed(conn: psycopg.Connection | None, text: str, model: type[BaseModel], stream_id: str,
               metadata: Any, event_id: Any) -> str:
    """The payload text with its personal fields encrypted (infrastructure.personal_data).

    Checked for size before: the bounds are the plaintext's.
    """
    payload = from_json(text)
    named, actor = subject_of(metadata)
    if not keyring().conceal(conn, payload, personal_paths(model), stream_id=stream_id, named=named,
                             actor=actor, event_id=event_id if isinstance(event_id, UUID) else None):
        return text
    return to_json(payload).decode()


def _stored(conn: psycopg.Connection, event_ids: list[UUID]) -> bool:
    """Whether any of these event ids is stored already (a retry, or a reused id)."""
    # Planned for each call (prepare=False): a plan cached while `events` was small would scan it.
    with conn.cursor(row_factory=tuple_row) as cur:
        cur.execute(f"SELECT EXISTS ({events_by_id('1', '= ANY(%s)')})", (event_ids,), prepare=False)
        return cur.fetchone()[0]
