"""The workspace's application service: load, decide, append, and answer questions about history.

It is an eventsourcing Application, so the persistence module named by PERSISTENCE_MODULE
(Chronicle's: infrastructure.persistence, on PostgreSQL) stores its events and snapshots;
without one it runs in memory. It knows no SQL: conflicts arrive as the library's
IntegrityError, command ids are looked up through the recorder's `find_command`.
"""

from __future__ import annotations

import logging
import random
import time
from datetime import datetime
from typing import Any, TypeVar
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.domain import MutableOrImmutableAggregate
from eventsourcing.persistence import IntegrityError, Recording

from domain import commands as c
from domain.agent import Agent
from domain.aggregate import WorkspaceAggregate
from domain.chain import Chain
from domain.decisions import aggregate_class_of as _aggregate_class_of, create, decide, is_creation
from domain.decisions import stream_field_of as _stream_field_of, stream_id_of as _stream_id_of
from domain.diff import diff_states
from domain.document import Document
from domain.errors import ConflictError, DomainError, NotFoundError
from domain.event_types import registry
from service_layer.repository import DEFAULT_AGGREGATE_CACHE_SIZE, WorkspaceRepository, project
from service_layer.results import CommandResult, HistoryEntry, StateAtVersion, StreamDiff
from domain.ids import uuid7

logger = logging.getLogger(__name__)

A = TypeVar("A", bound=WorkspaceAggregate)

# Without an expected version, a command is retried this many times in all on conflicts.
MAX_ATTEMPTS = 5
DEFAULT_SNAPSHOT_INTERVAL = 50
# Creating without an id derives the id from the command id, so a retried create is one stream.
COMMAND_NAMESPACE = uuid5(NAMESPACE_URL, "https://chronicle/commands")


class Workspace(Application[UUID]):
    """Chains, documents and agents: handles commands, serves state at any version or time.

    Snapshots every CHRONICLE_SNAPSHOT_INTERVAL events (default 50) of each stream.
    """

    name = "chronicle"
    # Snapshots are taken by `save` below through the public take_snapshot, not by the library's
    # own interval hook, so a failed snapshot cannot fail a command whose events are stored.
    is_snapshotting_enabled = True

    def __init__(self, env: dict[str, str] | None = None, *, snapshot_interval: int | None = None) -> None:
        super().__init__(env)
        if snapshot_interval is None:
            snapshot_interval = int(self.env.get("CHRONICLE_SNAPSHOT_INTERVAL", str(DEFAULT_SNAPSHOT_INTERVAL)))
        if snapshot_interval < 1:
            raise ValueError("the snapshot interval is at least 1")
        self.snapshot_interval = snapshot_interval
        self.snapshot_intervals: dict[type[WorkspaceAggregate], int] = {
            Chain: snapshot_interval, Document: snapshot_interval, Agent: snapshot_interval}
        # Used only when the recorder cannot look command ids up (the in-memory recorder).
        self._handled_commands: dict[UUID, CommandResult] = {}

    def construct_repository(self) -> WorkspaceRepository:
        """A repository caching CHRONICLE_AGGREGATE_CACHE_SIZE current aggregates (0: none).

        Always fast-forwarded on load, so processes sharing a database stay correct.
        """
        size = int(self.env.get("CHRONICLE_AGGREGATE_CACHE_SIZE", str(DEFAULT_AGGREGATE_CACHE_SIZE)))
        if size < 0:
            raise ValueError("the aggregate cache size is at least 0")
        return WorkspaceRepository(
            event_store=self.events, snapshot_store=self.snapshots, cache_maxsize=size or None, fastforward=True,
        )

    # -- commands ----------------------------------------------------------------------------

    def handle(self, command: c.Command, context: c.CommandContext | None = None) -> CommandResult:
        """Load the stream, let its aggregate decide, append with the expected version.

        Raises DomainError (the rule's code), NotFoundError, ConflictError (carrying the current version).
        """
        context = context or c.CommandContext()
        if command.command_id is not None:
            first = self.find_command(command.command_id)
            if first is not None:
                return first
        metadata = self._metadata(command, context)
        if is_creation(command):
            return self._create(command, metadata)
        expected = command.expected_version
        attempts = 1 if expected is not None else MAX_ATTEMPTS
        stream_id = _stream_id_of(command)
        attempt, fresh = 1, False
        while True:
            # The first try decides on the cached aggregate without reading the log. A stale one
            # cannot write (the append names the version it saw); anything but a clean append is
            # confirmed on a fresh load before it is answered.
            aggregate, unchecked = self._load(stream_id, _aggregate_class_of(command), _stream_field_of(command), fresh)
            fresh = True
            try:
                if expected is not None and aggregate.version != expected:
                    raise ConflictError(str(stream_id), expected, aggregate.version)
                self._decide(command, aggregate)
            except DomainError:
                if unchecked:
                    continue
                raise
            if not aggregate.pending_events:
                if unchecked:
                    continue
                # Nothing to change, perhaps because this very command id just landed concurrently.
                first = self._first_result(command)
                return first or CommandResult(str(stream_id), aggregate.version, None, 0)
            result = self._append(command, aggregate, metadata, cache=True)
            if result is not None:
                return result
            if unchecked:
                continue
            if attempt == attempts:
                raise ConflictError(str(stream_id), expected, self.current_version(stream_id))
            time.sleep(random.uniform(0, 0.005 * attempt))
            attempt += 1

    def _first_result(self, command: c.Command) -> CommandResult | None:
        """The result a command id already got (a retry, or the same command landing concurrently)."""
        return self.find_command(command.command_id) if command.command_id else None

    def _create(self, command: c.CreateChain | c.CreateDocument | c.CreateAgent, metadata: dict[str, Any]) -> CommandResult:
        aggregate = create(command, _id_for)
        result = self._append(command, aggregate, metadata, cache=False)
        if result is None:
            raise DomainError(
                "already_exists", f"stream {aggregate.id} already exists", field=f"{aggregate.stream_type}_id"
            )
        return result

    def _append(
        self, command: c.Command, aggregate: WorkspaceAggregate, metadata: dict[str, Any], *, cache: bool
    ) -> CommandResult | None:
        """Append the aggregate's pending events (and, with `cache`, keep it for the next command): the result.

        When the stream moved on first, the result this command id already got, else None.
        """
        appended = len(aggregate.pending_events)
        try:
            recordings = self.save(aggregate, **metadata)
        except IntegrityError:
            return self._first_result(command)
        result = self._handled(command, aggregate, recordings, appended)
        if cache:
            self.repository.remember(aggregate)
        return result

    def _decide(self, command: c.Command, aggregate: Any) -> None:
        """Call the aggregate's command method for `command` (domain.decisions); its events stay pending."""
        decide(self, command, aggregate)

    def check_node_ref(self, kind: str, ref_id: str) -> None:
        """A node refers to a document or agent that exists (it may be deleted later).

        Raises DomainError node_ref_not_found.
        """
        expected = {"document": Document, "agent": Agent}.get(kind)
        if expected is None:
            return  # the aggregate names the rule (invalid_node_kind)
        try:
            referenced = self.repository.get(UUID(ref_id))
        except (ValueError, TypeError, AggregateNotFoundError):
            referenced = None
        if not isinstance(referenced, expected):
            raise DomainError("node_ref_not_found", f"there is no {kind} {str(ref_id)[:80]}", field="ref_id")

    def _metadata(self, command: c.Command, context: c.CommandContext) -> dict[str, Any]:
        correlation_id = context.correlation_id or (str(command.command_id) if command.command_id else str(uuid7()))
        metadata = {
            "actor_id": context.actor_id,
            "actor_type": context.actor_type,
            "session_id": context.session_id,
            "correlation_id": correlation_id,
            "causation_id": context.causation_id,
            "command_id": str(command.command_id) if command.command_id else None,
            "subject_id": context.subject_id,
        }
        return {key: value for key, value in metadata.items() if value is not None}

    def _handled(
        self, command: c.Command, aggregate: WorkspaceAggregate, recordings: list[Recording[UUID]], appended: int
    ) -> CommandResult:
        position = recordings[-1].notification.id if recordings else None
        result = CommandResult(str(aggregate.id), aggregate.version, position, appended)
        if command.command_id is not None and not hasattr(self.recorder, "find_command"):
            self._handled_commands[command.command_id] = result
        return result

    def find_command(self, command_id: UUID) -> CommandResult | None:
        """The first result of the command with this id, or None if it was never handled.

        Asks the recorder's `find_command`; with the in-memory recorder, this process's memory.
        """
        find = getattr(self.recorder, "find_command", None)
        if find is None:
            first = self._handled_commands.get(command_id)
            return None if first is None else CommandResult(first.stream_id, first.version, first.position, 0, True)
        found = find(command_id)
        if not found:
            return None
        # Chronicle's recorder lists the events the command appended; the last one is its result.
        last = found[-1] if isinstance(found, list) else found
        stream_id, version, position = last
        return CommandResult(str(stream_id), int(version), position, 0, True)

    def save(
        self, *objs: MutableOrImmutableAggregate[UUID] | None, **kwargs: Any
    ) -> list[Recording[UUID]]:
        """Append the aggregates' pending events; then snapshot each stream that reached its interval.

        A failed snapshot is logged, not raised: the command's events are already stored.
        """
        saved = {obj.id: obj for obj in objs if isinstance(obj, WorkspaceAggregate)}
        if len(saved) == len(objs) and not self.snapshotting_intervals:
            # What the library's save does for aggregates (its hooks are not used here), without
            # its runtime protocol checks of each object, which cost more than collecting the events.
            recordings = self.events.put([event for obj in saved.values() for event in obj.collect_events()],
                                         **kwargs)
        else:
            recordings = super().save(*objs, **kwargs)
        for recording in recordings:
            event = recording.domain_event
            aggregate = saved.get(event.originator_id)
            interval = self.snapshot_intervals.get(type(aggregate))  # type: ignore[arg-type]
            if interval and event.originator_version % interval == 0:
                try:
                    self.take_snapshot(event.originator_id, version=event.originator_version, aggregate=aggregate)
                except Exception:  # noqa: BLE001
                    logger.exception("taking a snapshot failed; time travel replays further until the next one")
        return recordings

    def take_snapshot(
        self, aggregate_id: UUID, version: int | None = None, projector_func: Any = project,
        *, aggregate: WorkspaceAggregate | None = None,
    ) -> None:
        """Store a snapshot of the stream at `version`.

        Of `aggregate` when it is the stream at that version (the one just saved): no replay.
        """
        if aggregate is not None and aggregate.id == aggregate_id and aggregate.version == version:
            self.snapshots.put([aggregate.Snapshot.take(aggregate)])  # type: ignore[union-attr]
            return
        super().take_snapshot(aggregate_id, version=version, projector_func=projector_func)

    def state_of_version(self, stream_id: UUID, version: int) -> dict[str, Any]:
        """The stream's contract `state` at `version` (what undo and redo restore)."""
        return self._get(stream_id, version).state()

    # -- reading -----------------------------------------------------------------------------

    def get(self, stream_id: UUID | str) -> StateAtVersion:
        """The stream's current state.

        Raises NotFoundError.
        """
        aggregate = self._get(_as_uuid(stream_id), None)
        return _stream_state(aggregate)

    def state_at(
        self, stream_id: UUID | str, *, version: int | None = None, at: datetime | None = None
    ) -> StateAtVersion:
        """The stream's state at `version`, or as of the timestamp `at` (its last event at or before it).

        Rebuilt from the nearest snapshot plus the events after it. Raises NotFoundError, DomainError version_not_found.
        """
        uuid = _as_uuid(stream_id)
        if (version is None) == (at is None):
            raise DomainError("invalid_query", "give exactly one of version and at", field="version")
        if at is not None:
            version = self.version_at(uuid, at)
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise DomainError("version_not_found", "version must be an integer >= 1", field="version")
        aggregate = self._get(uuid, version)
        if aggregate.version != version:
            raise DomainError(
                "version_not_found", f"stream {uuid} has {aggregate.version} versions, not {version}", field="version"
            )
        return _stream_state(aggregate)

    def version_at(self, stream_id: UUID | str, at: datetime) -> int:
        """The stream's version as of `at`: the version of its last event timestamped at or before it.

        A binary search over event timestamps (log n single-event reads). Raises NotFoundError.
        """
        uuid = _as_uuid(stream_id)
        if at.tzinfo is None:
            raise DomainError("invalid_query", "the timestamp needs a time zone", field="at")
        low, high = 1, self.current_version(uuid)
        if high == 0:
            raise NotFoundError(f"stream {uuid} does not exist", field="stream_id")
        if self._event(uuid, 1).timestamp > at:
            raise NotFoundError(f"stream {uuid} did not exist at {at.isoformat()}", field="at")
        while low < high:
            middle = (low + high + 1) // 2
            if self._event(uuid, middle).timestamp <= at:
                low = middle
            else:
                high = middle - 1
        return low

    def current_version(self, stream_id: UUID | str) -> int:
        """The stream's version now, 0 if it has no events."""
        last = list(self.events.get(_as_uuid(stream_id), desc=True, limit=1))
        return last[0].originator_version if last else 0

    def diff(self, stream_id: UUID | str, from_version: int, to_version: int) -> StreamDiff:
        """What changed between two versions of a stream, field by field.

        Raises NotFoundError, DomainError version_not_found.
        """
        before = self.state_at(stream_id, version=from_version)
        after = self.state_at(stream_id, version=to_version)
        return StreamDiff(before.stream_id, from_version, to_version, diff_states(before.state, after.state))

    def history(self, stream_id: UUID | str, *, after_version: int = 0, limit: int = 100) -> list[HistoryEntry]:
        """Up to `limit` of the stream's events after `after_version`, oldest first.

        Payloads as stored, without the library's originator fields.
        """
        limit = max(1, min(limit, 1000))
        events = self.events.get(_as_uuid(stream_id), gt=after_version, limit=limit)
        return [_history_entry(event) for event in events]

    def replay(self, stream_id: UUID | str, version: int | None = None) -> WorkspaceAggregate:
        """The aggregate rebuilt from its events alone, ignoring snapshots (for checks and benchmarks).

        Raises NotFoundError.
        """
        uuid = _as_uuid(stream_id)
        aggregate = project(None, self.events.get(uuid, lte=version))
        if aggregate is None:
            raise NotFoundError(f"stream {uuid} does not exist", field="stream_id")
        return aggregate

    # -- helpers -----------------------------------------------------------------------------

    def _get(self, stream_id: UUID, version: int | None) -> WorkspaceAggregate:
        try:
            return self.repository.get(stream_id, version=version)
        except AggregateNotFoundError:
            raise NotFoundError(f"stream {stream_id} does not exist", field="stream_id") from None

    def _load(self, stream_id: UUID, aggregate_class: type[A], field: str, fresh: bool = True) -> tuple[A, bool]:
        """The aggregate (`fresh`: up to date with the log), and whether it is the cached one unchecked."""
        cached = None if fresh else self.repository.cached_copy(stream_id)
        if isinstance(cached, aggregate_class):
            return cached, True
        try:
            aggregate = self.repository.get(stream_id)
        except AggregateNotFoundError:
            aggregate = None
        if not isinstance(aggregate, aggregate_class):
            kind = getattr(aggregate_class, "stream_type", "stream")
            raise NotFoundError(f"there is no {kind} {stream_id}", field=field)
        return aggregate, False

    def _event(self, stream_id: UUID, version: int) -> Any:
        return next(iter(self.events.get(stream_id, gt=version - 1, lte=version)))


def _stream_state(aggregate: WorkspaceAggregate) -> StateAtVersion:
    return StateAtVersion(str(aggregate.id), aggregate.stream_type, aggregate.version, aggregate.modified_on,
                       aggregate.state())


def _history_entry(event: Any) -> HistoryEntry:
    payload = {
        key: (str(value) if isinstance(value, UUID) else value)
        for key, value in vars(event).items()
        if key not in ("originator_id", "originator_version", "timestamp")
    }
    return HistoryEntry(event.originator_version, registry.name_of(type(event)) or type(event).__name__,
                        event.timestamp, payload)


def _as_uuid(stream_id: UUID | str) -> UUID:
    if isinstance(stream_id, UUID):
        return stream_id
    try:
        return UUID(str(stream_id))
    except ValueError:
        raise NotFoundError(f"{str(stream_id)[:80]!r} is not a stream id", field="stream_id") from None


def _id_for(command: c.Command) -> UUID:
    return uuid5(COMMAND_NAMESPACE, str(command.command_id)) if command.command_id else uuid7()

