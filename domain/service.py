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
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar
from uuid import NAMESPACE_URL, UUID, uuid4, uuid5

from eventsourcing.application import AggregateNotFoundError, Application, ProcessingEvent, project_aggregate
from eventsourcing.persistence import IntegrityError, Recording

from domain import commands as c
from domain.agent import Agent
from domain.aggregate import WorkspaceAggregate
from domain.chain import Chain
from domain.diff import FieldChange, diff_states
from domain.document import Document
from domain.errors import ConflictError, DomainError, NotFoundError
from domain.event_types import registry

logger = logging.getLogger(__name__)

A = TypeVar("A", bound=WorkspaceAggregate)

# Without an expected version, a command is retried this many times in all on conflicts.
MAX_ATTEMPTS = 5
DEFAULT_SNAPSHOT_INTERVAL = 50
# Creating without an id derives the id from the command id, so a retried create is one stream.
COMMAND_NAMESPACE = uuid5(NAMESPACE_URL, "https://chronicle/commands")


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
class StreamState:
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


class Workspace(Application[UUID]):
    """Chains, documents and agents: handles commands, serves state at any version or time.

    Snapshots every CHRONICLE_SNAPSHOT_INTERVAL events (default 50) of each stream.
    """

    name = "chronicle"
    snapshotting_intervals = {Chain: DEFAULT_SNAPSHOT_INTERVAL, Document: DEFAULT_SNAPSHOT_INTERVAL,
                              Agent: DEFAULT_SNAPSHOT_INTERVAL}

    def __init__(self, env: dict[str, str] | None = None, *, snapshot_interval: int | None = None) -> None:
        super().__init__(env)
        if snapshot_interval is None:
            snapshot_interval = int(self.env.get("CHRONICLE_SNAPSHOT_INTERVAL", str(DEFAULT_SNAPSHOT_INTERVAL)))
        if snapshot_interval < 1:
            raise ValueError("the snapshot interval is at least 1")
        self.snapshot_interval = snapshot_interval
        self.snapshotting_intervals = {Chain: snapshot_interval, Document: snapshot_interval,
                                       Agent: snapshot_interval}
        # Used only when the recorder cannot look command ids up (the in-memory recorder).
        self._handled_commands: dict[UUID, CommandResult] = {}

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
        if isinstance(command, (c.CreateChain, c.CreateDocument, c.CreateAgent)):
            return self._create(command, metadata)
        expected = command.expected_version
        attempts = 1 if expected is not None else MAX_ATTEMPTS
        stream_id = _stream_id_of(command)
        for attempt in range(1, attempts + 1):
            aggregate = self._load(stream_id, _aggregate_class_of(command), _stream_field_of(command))
            if expected is not None and aggregate.version != expected:
                raise ConflictError(str(stream_id), expected, aggregate.version)
            self._decide(command, aggregate)
            if not aggregate.pending_events:
                # Nothing to change, perhaps because this very command id just landed concurrently.
                first = self.find_command(command.command_id) if command.command_id else None
                return first or CommandResult(str(stream_id), aggregate.version, None, 0)
            appended = len(aggregate.pending_events)
            try:
                recordings = self.save(aggregate, **metadata)
            except IntegrityError:
                first = self.find_command(command.command_id) if command.command_id else None
                if first is not None:
                    return first
                if attempt == attempts:
                    raise ConflictError(str(stream_id), expected, self.current_version(stream_id)) from None
                time.sleep(random.uniform(0, 0.005 * attempt))
                continue
            return self._handled(command, aggregate, recordings, appended)
        raise AssertionError("unreachable")  # pragma: no cover

    def _create(self, command: c.CreateChain | c.CreateDocument | c.CreateAgent, metadata: dict[str, Any]) -> CommandResult:
        match command:
            case c.CreateChain():
                stream_id = command.chain_id or _id_for(command)
                aggregate: WorkspaceAggregate = Chain.create(
                    stream_id, command.name, command.description, command.metadata
                )
            case c.CreateDocument():
                stream_id = command.document_id or _id_for(command)
                aggregate = Document.create(
                    stream_id, command.namespace, command.document_type, command.title,
                    content=command.content, body=command.body, metadata=command.metadata,
                )
            case c.CreateAgent():
                stream_id = command.agent_id or _id_for(command)
                aggregate = Agent.create(
                    stream_id, command.name, command.prompt, command.model, command.tools, command.metadata
                )
        appended = len(aggregate.pending_events)
        try:
            recordings = self.save(aggregate, **metadata)
        except IntegrityError:
            first = self.find_command(command.command_id) if command.command_id else None
            if first is not None:
                return first
            raise DomainError(
                "already_exists", f"stream {stream_id} already exists", field=f"{aggregate.stream_type}_id"
            ) from None
        return self._handled(command, aggregate, recordings, appended)

    def _decide(self, command: c.Command, aggregate: Any) -> None:
        """Call the aggregate's command method for `command`; its events stay pending."""
        match command:
            case c.UpdateChain():
                aggregate.update(name=command.name, description=command.description, metadata=command.metadata)
            case c.UpdateCanvas():
                aggregate.update_canvas(command.canvas_state, command.viewport)
            case c.AddNode():
                self._check_node_ref(command.kind, command.ref_id)
                aggregate.add_node(command.node_id, command.kind, command.ref_id, command.position)
            case c.RemoveNode():
                aggregate.remove_node(command.node_id)
            case c.DeleteChain():
                aggregate.delete(command.reason)
            case c.CreateEdge():
                aggregate.create_edge(
                    command.edge_id, command.source_id, command.target_id, command.type, command.metadata
                )
            case c.UpdateEdge():
                aggregate.update_edge(command.edge_id, type=command.type, metadata=command.metadata)
            case c.DeleteEdge():
                aggregate.delete_edge(command.edge_id, command.reason)
            case c.UpdateDocument():
                aggregate.update(
                    title=command.title, content=command.content, body=command.body,
                    metadata=command.metadata, change_description=command.change_description,
                )
            case c.DeleteDocument():
                aggregate.delete(command.reason)
            case c.RestoreDocument():
                aggregate.restore(command.reason)
            case c.TagDocument():
                aggregate.tag(command.tag, command.version)
            case c.UntagDocument():
                aggregate.untag(command.tag)
            case c.UpdateAgent():
                aggregate.update(
                    name=command.name, prompt=command.prompt, model=command.model,
                    tools=command.tools, metadata=command.metadata,
                )
            case c.DeleteAgent():
                aggregate.delete(command.reason)
            case c.RecordExecution():
                aggregate.record_execution(
                    command.execution_id, command.input, command.output,
                    command.duration_ms, command.tokens, command.metadata,
                )
            case c.Undo():
                aggregate.undo(lambda version: self._get(aggregate.id, version).state())
            case c.Redo():
                aggregate.redo(lambda version: self._get(aggregate.id, version).state())
            case _:
                raise DomainError("unknown_command", f"no handler for {type(command).__name__}", field="command")

    def _check_node_ref(self, kind: str, ref_id: str) -> None:
        """A node refers to a document or agent that exists (it may be deleted later)."""
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
        correlation_id = context.correlation_id or (str(command.command_id) if command.command_id else str(uuid4()))
        metadata = {
            "actor_id": context.actor_id,
            "actor_type": context.actor_type,
            "session_id": context.session_id,
            "correlation_id": correlation_id,
            "causation_id": context.causation_id,
            "command_id": str(command.command_id) if command.command_id else None,
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

    def _take_snapshots(self, processing_event: ProcessingEvent[UUID]) -> None:
        # A failed snapshot must not fail a command whose events are already stored.
        try:
            super()._take_snapshots(processing_event)
        except Exception:  # noqa: BLE001
            logger.exception("taking a snapshot failed; time travel replays further until the next one")

    # -- reading -----------------------------------------------------------------------------

    def get(self, stream_id: UUID | str) -> StreamState:
        """The stream's current state.

        Raises NotFoundError.
        """
        aggregate = self._get(_as_uuid(stream_id), None)
        return _stream_state(aggregate)

    def state_at(
        self, stream_id: UUID | str, *, version: int | None = None, at: datetime | None = None
    ) -> StreamState:
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
        aggregate = project_aggregate(None, self.events.get(uuid, lte=version))
        if aggregate is None:
            raise NotFoundError(f"stream {uuid} does not exist", field="stream_id")
        return aggregate

    # -- helpers -----------------------------------------------------------------------------

    def _get(self, stream_id: UUID, version: int | None) -> WorkspaceAggregate:
        try:
            return self.repository.get(stream_id, version=version)
        except AggregateNotFoundError:
            raise NotFoundError(f"stream {stream_id} does not exist", field="stream_id") from None

    def _load(self, stream_id: UUID, aggregate_class: type[A], field: str) -> A:
        try:
            aggregate = self.repository.get(stream_id)
        except AggregateNotFoundError:
            aggregate = None
        if not isinstance(aggregate, aggregate_class):
            kind = getattr(aggregate_class, "stream_type", "stream")
            raise NotFoundError(f"there is no {kind} {stream_id}", field=field)
        return aggregate

    def _event(self, stream_id: UUID, version: int) -> Any:
        return next(iter(self.events.get(stream_id, gt=version - 1, lte=version)))


def _stream_state(aggregate: WorkspaceAggregate) -> StreamState:
    return StreamState(str(aggregate.id), aggregate.stream_type, aggregate.version, aggregate.modified_on,
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
    return uuid5(COMMAND_NAMESPACE, str(command.command_id)) if command.command_id else uuid4()


def _stream_id_of(command: Any) -> UUID:
    for field in ("chain_id", "document_id", "agent_id", "stream_id"):
        if field in type(command).model_fields:
            return getattr(command, field)
    raise DomainError("unknown_command", f"{type(command).__name__} names no stream", field="command")


def _stream_field_of(command: Any) -> str:
    for field in ("chain_id", "document_id", "agent_id", "stream_id"):
        if field in type(command).model_fields:
            return field
    return "stream_id"


def _aggregate_class_of(command: Any) -> type[WorkspaceAggregate]:
    fields = type(command).model_fields
    if "chain_id" in fields:
        return Chain
    if "document_id" in fields:
        return Document
    if "agent_id" in fields:
        return Agent
    return WorkspaceAggregate

