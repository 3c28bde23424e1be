"""The eventsourcing library's recorders on Chronicle's store: events, snapshots, tracking.

One ChronicleDatastore (a pool and an EventStore) is shared by a factory's recorders.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from typing import Any
from uuid import UUID

import psycopg

from eventsourcing.persistence import (
    AggregateRecorder,
    ApplicationRecorder,
    DataError,
    IntegrityError,
    ListenNotifySubscription,
    Notification,
    ProcessRecorder,
    StoredEvent,
    Subscription,
    Tracking,
    TrackingRecorder,
)
from domain.ids import uuid7
from infrastructure import metrics
from infrastructure.library_internals import fail_subscription, subscription_running, wake_subscription
from infrastructure.db import connect, direct_url
from infrastructure.event_store import NOTIFY_CHANNEL, AppendResult, NewEvent
from infrastructure.eventsourcing_mapper import (
    _id_text,
    encoded_payload_from_state,
    payload_from_state,
    state_from_payload,
)
from infrastructure.log_keys import of_stream
from infrastructure.personal_data import conceal_snapshot, reveal_snapshots
from infrastructure.eventsourcing_datastore import (
    LIBRARY_STREAM_TYPE,
    MAX_VERSION,
    ChronicleDatastore,
    CommandEvent,
    _ChronicleRecorder,
    id_value,
    library_errors,
    version_bounds,
)

__all__ = [
    "LIBRARY_STREAM_TYPE", "MAX_VERSION", "ChronicleApplicationRecorder", "ChronicleDatastore",
    "ChronicleProcessRecorder", "ChronicleSnapshotRecorder", "ChronicleSubscription", "ChronicleTrackingRecorder",
    "CommandEvent", "_ChronicleRecorder", "library_errors",
]


# -- snapshots --------------------------------------------------------------------------------


class _StreamRecorder(_ChronicleRecorder):
    """A recorder whose rows are one aggregate's, in version order: snapshots or events."""

    _STREAM_QUERY: str  # version, type and the state's columns of stream %(stream)s of log %(log)s

    def _states(self, conn: psycopg.Connection[Any], rows: list[dict[str, Any]]) -> list[bytes]:
        """Each row's state as the library's bytes, its personal fields revealed."""
        raise NotImplementedError

    def select_events(
        self,
        originator_id: UUID | str,
        *,
        gt: int | None = None,
        lte: int | None = None,
        desc: bool = False,
        limit: int | None = None,
    ) -> Sequence[StoredEvent]:
        """One aggregate's rows in (gt, lte], in version order (newest first with desc=True)."""
        order = "DESC" if desc else "ASC"
        with library_errors(), self.datastore.pool.connection() as conn:
            rows = conn.execute(
                f"{self._STREAM_QUERY} AND version > %(gt)s AND version <= %(lte)s"
                f" ORDER BY version {order} LIMIT %(limit)s",
                {"log": self.log_name, "stream": _id_text(originator_id), "limit": limit,
                 **dict(zip(("gt", "lte"), version_bounds(gt, lte)))},
            ).fetchall()
            states = self._states(conn, rows)
        return [
            StoredEvent(originator_id, row["version"], row["type"], state) for row, state in zip(rows, states)
        ]


class ChronicleSnapshotRecorder(_StreamRecorder, AggregateRecorder):
    """Aggregate snapshots in the `snapshots` table: a cache of state at a version, as jsonb."""

    def insert_events(self, stored_events: Sequence[StoredEvent], **kwargs: Any) -> Sequence[int] | None:
        """Record snapshots, all or nothing; an existing (stream, version) is an IntegrityError."""
        if not stored_events:
            return None
        with self.transaction() as conn, conn.cursor() as cur:
            rows = [
                (self.log_name, _id_text(e.originator_id), e.originator_version, e.topic,
                 json.dumps(conceal_snapshot(conn, _id_text(e.originator_id), payload_from_state(e.state)),
                            separators=(",", ":")))
                for e in stored_events
            ]
            cur.executemany(
                "INSERT INTO snapshots (log_name, stream_id, version, type, state)"
                " VALUES (%s, %s, %s, %s, %s::jsonb)",
                rows,
            )
        return None

    # One aggregate's snapshots, by the (log_name, stream_id, version) key.
    _STREAM_QUERY = "SELECT version, type, state FROM snapshots WHERE log_name = %(log)s AND stream_id = %(stream)s"

    def _states(self, conn: psycopg.Connection[Any], rows: list[dict[str, Any]]) -> list[bytes]:
        reveal_snapshots(conn, [row["state"] for row in rows])
        return [state_from_payload(row["state"]) for row in rows]


# -- the application recorder -----------------------------------------------------------------


class ChronicleApplicationRecorder(_StreamRecorder, ApplicationRecorder):
    """An application's events in Chronicle's `events` table, its notification log = `log_name`."""

    def insert_events(self, stored_events: Sequence[StoredEvent], **kwargs: Any) -> Sequence[int] | None:
        """Append a save's events, all aggregates in one transaction; return their positions.

        Keyword arguments of `save()` (actor_id, actor_type, session_id, correlation_id,
        causation_id, command_id, ...) land in every event's metadata.
        """
        tracking: Tracking | None = kwargs.pop("tracking", None)
        metadata = self.datastore.event_metadata(
            {k: (str(v) if isinstance(v, UUID) else v) for k, v in kwargs.items() if v is not None}
        )
        appends = self._appends(stored_events)
        if not appends and tracking is None:
            return None
        store = self.datastore.store
        results: list[AppendResult] = []
        started = time.perf_counter()
        if len(appends) == 1 and tracking is None:
            # One stream, nothing tracked: a transaction of its own, as EventStore.append (one
            # statement on an autocommit connection, or with concurrent saves' appends in a group).
            stream_id, expected, events, stream_type = appends[0]
            with library_errors():
                results.append(store.commit_append(
                    stream_id, expected, events, metadata, stream_type=stream_type, log_name=self.log_name,
                ))
        else:
            with self.transaction() as conn:
                self._before_appends(conn, tracking)
                for stream_id, expected, events, stream_type in appends:
                    results.append(
                        store.append_on(
                            conn, stream_id, expected, events, metadata,
                            stream_type=stream_type, log_name=self.log_name,
                        )
                    )
        metrics.APPEND_SECONDS.observe(time.perf_counter() - started)
        # Wake readers after the commit (a NOTIFY inside it would serialise committers).
        store.committed(results, self.log_name)
        if not stored_events:
            return None
        if len(results) == 1 and len(results[0].positions) == len(stored_events):
            return list(results[0].positions)  # one stream: its events' positions, in version order
        positions = {
            (r.stream_id, r.first_version + i): p for r in results for i, p in enumerate(r.positions)
        }
        return [positions[(_id_text(e.originator_id), e.originator_version)] for e in stored_events]

    def _before_appends(self, conn: psycopg.Connection[Any], tracking: Tracking | None) -> None:
        """Hook: the process recorder records its tracking here, in the same transaction."""

    def _appends(
        self, stored_events: Sequence[StoredEvent]
    ) -> list[tuple[str, int, list[NewEvent], str]]:
        """Group events by stream: (stream id, expected version, events, stream type) each.

        Every save pays this, so it looks each topic up once and skips the grouping's checks
        where one event makes them moot.
        """
        groups: dict[str, Sequence[StoredEvent]]
        if len(stored_events) == 1:  # a command's save, the common case: one stream, nothing to group
            groups = {_id_text(stored_events[0].originator_id): stored_events}
        else:
            groups = {}
            for event in stored_events:
                groups.setdefault(_id_text(event.originator_id), []).append(event)  # type: ignore[attr-defined]
        appends = []
        find = self.datastore.registry.find
        for stream_id, events in groups.items():
            first = events[0].originator_version
            if len(events) > 1:
                versions = [e.originator_version for e in events]
                if versions != list(range(first, first + len(events))):
                    raise IntegrityError(
                        f"stream {stream_id}: versions {versions} must follow on without gaps or repeats"
                    )
            if first < 1:
                raise DataError(f"stream {stream_id}: Chronicle streams start at version 1, not {first}")
            stream_type = None  # the first registered event's, else the library's
            new_events = []
            for e in events:
                event_type = find(e.topic)
                envelope = None
                if event_type is not None:
                    stream_type = stream_type or event_type.stream_type
                    envelope = {"originator_id": stream_id, "originator_version": e.originator_version}
                    # The mapper's pydantic event itself, else the payload its state encodes.
                    payload = getattr(e, "domain_event", None) or payload_from_state(e.state)
                else:
                    payload = encoded_payload_from_state(e.state)
                event_id = getattr(e, "event_id", None) or uuid7()
                new_events.append(NewEvent(e.topic, payload, event_id, envelope))
            appends.append((stream_id, first - 1, new_events, stream_type or LIBRARY_STREAM_TYPE))
        return appends

    # A stream of this application's log, by events_stream_idx (hashtext(stream_id), version).
    _STREAM_QUERY = ("SELECT version, type, schema_version, payload FROM events"
                     f" WHERE log_name = %(log)s AND {of_stream(value='%(stream)s')}")

    def _states(self, conn: psycopg.Connection[Any], rows: list[dict[str, Any]]) -> list[bytes]:
        return self.datastore.payload_states(conn, rows)

    def select_notifications(
        self,
        start: int | None,
        limit: int,
        stop: int | None = None,
        topics: Sequence[str] = (),
        *,
        inclusive_of_start: bool = True,
    ) -> Sequence[Notification]:
        """This log's events from `start` (a position), gap-free, filtered by topic or type name.

        Notification ids are global positions: increasing, not contiguous.
        """
        after = 0 if start is None else (start - 1 if inclusive_of_start else start)
        types = [self.datastore.stored_type(t) for t in topics] if topics else None
        with library_errors(), self.datastore.pool.connection() as conn:
            rows = conn.execute(
                # read_log returns only events at or below the safe position.
                "SELECT position, stream_id, version, type, schema_version, payload"
                " FROM read_log(%s, %s, %s, %s)",
                (after, limit, types, self.log_name),
            ).fetchall()
            rows = [row for row in rows if stop is None or row["position"] <= stop]
            states = self.datastore.payload_states(conn, rows)
        return [
            Notification(
                originator_id=id_value(row["stream_id"]),
                originator_version=row["version"],
                topic=row["type"],
                state=state,
                id=row["position"],
            )
            for row, state in zip(rows, states)
        ]

    def max_notification_id(self) -> int | None:
        """The newest position in this log that readers can see, None for an empty log."""
        with library_errors(), self.datastore.pool.connection() as conn:
            row = conn.execute(
                # Bounded by the safe position, like select_notifications.
                "SELECT max(position) AS max FROM events"
                " WHERE log_name = %s AND position <= safe_position()",
                (self.log_name,),
            ).fetchone()
        return row["max"]

    def subscribe(self, gt: int | None = None, topics: Sequence[str] = ()) -> Subscription[ApplicationRecorder]:
        """Notifications after `gt`, then new ones as they commit (LISTEN/NOTIFY)."""
        return ChronicleSubscription(self, gt=gt, topics=topics)

    def find_command(self, command_id: str | UUID) -> list[CommandEvent]:
        """The events a command appended to this log, in position order; empty if none.

        The domain's service answers a repeated command id from this instead of appending.
        """
        with library_errors(), self.datastore.pool.connection() as conn:
            rows = conn.execute(
                # Served by events_command_idx.
                "SELECT stream_id, version, position FROM events"
                " WHERE metadata->>'command_id' = %s AND log_name = %s ORDER BY position",
                (str(command_id), self.log_name),
            ).fetchall()
        return [CommandEvent(r["stream_id"], r["version"], r["position"]) for r in rows]


class ChronicleSubscription(ListenNotifySubscription[ChronicleApplicationRecorder]):
    """Pulls notifications after each NOTIFY on `chronicle_events`, and once a second.

    Any log's commit may free the safe position, and an aborted append frees it without a
    NOTIFY: so every notification, and a periodic tick, wakes the pull.
    """

    POLL_SECONDS = 1.0

    def __init__(
        self, recorder: ChronicleApplicationRecorder, gt: int | None = None, topics: Sequence[str] = ()
    ) -> None:
        datastore = recorder.datastore
        # LISTEN before the first pull, so nothing committed in between is missed.
        self._listen_conn = connect(direct_url(datastore.pool), datastore.settings)
        self._listen_conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
        super().__init__(recorder=recorder, gt=gt, topics=topics)
        self._listen_thread = threading.Thread(target=self._listen, daemon=True)
        self._listen_thread.start()

    def __exit__(self, *args: object, **kwargs: Any) -> None:
        try:
            super().__exit__(*args, **kwargs)
        finally:
            self._listen_thread.join()

    def _listen(self) -> None:
        ticks = 0
        try:
            with self._listen_conn as conn:
                while subscription_running(self):
                    for _ in conn.notifies(timeout=0.1, stop_after=1):
                        wake_subscription(self)
                    ticks += 1
                    if ticks * 0.1 >= self.POLL_SECONDS:
                        ticks = 0
                        wake_subscription(self)
        except BaseException as exc:  # noqa: BLE001 - surfaced to the iterating thread
            fail_subscription(self, exc)


# -- tracking ---------------------------------------------------------------------------------


class ChronicleTrackingRecorder(_ChronicleRecorder, TrackingRecorder):
    """How far `tracker` (a projection or process) has processed each upstream log."""

    def insert_tracking(self, tracking: Tracking) -> None:
        """Record a position; one at or below the recorded one is an IntegrityError."""
        with self.transaction() as conn:
            self.insert_tracking_on(conn, tracking)

    def insert_tracking_on(self, conn: psycopg.Connection[Any], tracking: Tracking) -> None:
        """`insert_tracking` in the caller's transaction, with the view's own rows."""
        row = conn.execute(
            # Moves forward only: no row back means the position was already processed.
            "INSERT INTO tracking AS t (tracker, application_name, notification_id)"
            " VALUES (%s, %s, %s)"
            " ON CONFLICT (tracker, application_name) DO UPDATE"
            " SET notification_id = EXCLUDED.notification_id, updated_at = now()"
            " WHERE t.notification_id < EXCLUDED.notification_id"
            " RETURNING notification_id",
            (self.tracker, tracking.application_name, tracking.notification_id),
        ).fetchone()
        if row is None:
            raise IntegrityError(
                f"{self.tracker} has already processed {tracking.application_name}"
                f" notification {tracking.notification_id}"
            )

    def max_tracking_id(self, application_name: str) -> int | None:
        """The last position of `application_name` this tracker processed, None if none."""
        with library_errors(), self.datastore.pool.connection() as conn:
            row = conn.execute(
                "SELECT notification_id FROM tracking WHERE tracker = %s AND application_name = %s",
                (self.tracker, application_name),
            ).fetchone()
        return row["notification_id"] if row else None


class ChronicleProcessRecorder(ChronicleTrackingRecorder, ChronicleApplicationRecorder, ProcessRecorder):
    """A process application's new events and its tracking record, in one transaction."""

    def _before_appends(self, conn: psycopg.Connection[Any], tracking: Tracking | None) -> None:
        if tracking is not None:
            self.insert_tracking_on(conn, tracking)
