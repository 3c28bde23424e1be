"""What every workspace aggregate shares: its event base classes, its snapshot, undo and redo.

Events are pydantic models (registered under stable names in domain.event_types), applied
through the eventsourcing library's Aggregate machinery. Undo and redo append events that
carry the stream's whole state; the aggregate keeps bounded undo and redo stacks of
[change_version, before_version] pairs, which are bookkeeping, not state.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import datetime
from typing import Any, ClassVar
from uuid import UUID

from eventsourcing.domain import (
    BaseAggregate,
    CanInitAggregate,
    CanMutateAggregate,
    CanSnapshotAggregate,
    datetime_now_with_tzinfo,
)
from eventsourcing.utils import get_topic, resolve_topic
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from domain.bounds import Reason, refusal
from domain.copies import copy_value
from domain.errors import DomainError
from domain.ids import uuid7
from domain.rules import MAX_REASON_CHARS, UNDO_DEPTH, check_text

# A function the service passes in: the stream's state (as `state()` returns it) at a version.
StateAt = Callable[[int], dict[str, Any]]


class WorkspaceEvent(BaseModel, CanMutateAggregate[UUID]):
    """Base of every workspace event: the library's originator id, version and timestamp.

    Payload fields are declared by subclasses; `apply` changes the aggregate.
    """

    # extra="ignore": the library passes `originator_topic` when it creates an aggregate;
    # created events carry their topic as a class constant, not in the payload.
    model_config = ConfigDict(frozen=True, extra="ignore")
    # The event registry stores only the fields an event was given (an update's changes).
    omit_unset_fields: ClassVar[bool] = True
    # Stored even when defaulted (see model_post_init): the stored schema requires it.
    always_stored_fields: ClassVar[tuple[str, ...]] = ("timestamp",)

    originator_id: UUID
    originator_version: int
    timestamp: datetime = Field(default_factory=datetime_now_with_tzinfo)

    def model_post_init(self, context: Any, /) -> None:
        # The timestamp is always part of the stored payload, even when it was defaulted.
        self.__pydantic_fields_set__.add("timestamp")

    def model_dump(self, **kwargs: Any) -> dict[str, Any]:
        """The event as data, leaving out fields it was not given (an update's unchanged fields).

        So `chain.updated` {name} is stored without description or metadata keys.
        """
        kwargs.setdefault("exclude_unset", True)
        return super().model_dump(**kwargs)

    @classmethod
    @functools.cache
    def payload_fields(cls) -> tuple[str, ...]:
        """The names of the event's own fields: all but the originator id, version and timestamp.

        Created and Updated events copy these onto the aggregate.
        """
        return tuple(name for name in cls.model_fields if name not in WorkspaceEvent.model_fields)

    def values(self, *names: str, given_only: bool = False) -> dict[str, Any]:
        """The named fields as a dict, lists and dicts deep-copied: the aggregate shares nothing with the event.

        With given_only, a field the event left out (None) is left out, as updates want.
        """
        out = {}
        for name in names:
            value = getattr(self, name)
            if value is None and given_only:
                continue
            out[name] = copy_value(value)
        return out

    def assign(self, target: Any, *names: str, given_only: bool = False) -> None:
        """Copy the named fields onto the aggregate (or a dict in it), as `values` gives them.

        With given_only, a field the event left out (None) keeps the target's value.
        """
        for name, value in self.values(*names, given_only=given_only).items():
            if isinstance(target, dict):
                target[name] = value
            else:
                setattr(target, name, value)


class WorkspaceCreated(WorkspaceEvent, CanInitAggregate[UUID]):
    """Base of the events that start a stream. Subclasses set `originator_topic`.

    The library resolves the aggregate class from it when it replays the stream.
    """

    originator_topic: ClassVar[str]

    def apply(self, aggregate: Any) -> None:
        self.assign(aggregate, *self.payload_fields())


class Change(WorkspaceEvent):
    """An event that changes the stream's state, so that undo can take it back.

    Subclasses say what changes in `change`; applying it also records it for undo.
    """

    def apply(self, aggregate: Any) -> None:
        self.change(aggregate)
        aggregate.record_change(self.originator_version)

    def change(self, aggregate: Any) -> None:
        """Change the aggregate's state as this event says."""
        raise NotImplementedError


class Updated(Change):
    """A change of the stream's fields the event carries; a field it leaves out (None) stays as it is."""

    def change(self, aggregate: Any) -> None:
        self.assign(aggregate, *self.payload_fields(), given_only=True)


class Deleted(Change):
    """The stream was deleted, with an optional reason."""

    reason: Reason | None = None

    def change(self, aggregate: Any) -> None:
        aggregate.deleted = True


class Undone(WorkspaceEvent):
    """A change was undone: the stream now has the state it had at `to_version`.

    `state` is the stream's whole state after this event.
    """

    undone_version: int
    to_version: int
    state: dict[str, Any]

    def apply(self, aggregate: WorkspaceAggregate) -> None:
        aggregate.apply_undone(self)


class Redone(WorkspaceEvent):
    """An undone change was re-applied: the stream again has the state of `to_version`.

    `state` is the stream's whole state after this event.
    """

    redone_version: int
    to_version: int
    state: dict[str, Any]

    def apply(self, aggregate: WorkspaceAggregate) -> None:
        aggregate.apply_redone(self)


class WorkspaceSnapshot(BaseModel, CanSnapshotAggregate[UUID]):
    """An aggregate's whole state (bookkeeping included) at one version, as plain JSON.

    Time travel starts from the nearest snapshot at or below the wanted version.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")
    # The event registry stores only the fields an event was given (an update's changes).
    omit_unset_fields: ClassVar[bool] = True

    originator_id: UUID
    originator_version: int
    timestamp: datetime = Field(default_factory=datetime_now_with_tzinfo)
    topic: str
    state: dict[str, Any]

    @classmethod
    def take(cls, aggregate: Any) -> WorkspaceSnapshot:
        """A snapshot of `aggregate` as it is now.

        Timestamps are stored as ISO strings so the state is plain JSON.
        """
        state = copy_value(
            {k: v for k, v in vars(aggregate).items() if k not in ("_id", "_version", "_pending_events")}
        )
        state["_created_on"] = aggregate.created_on.isoformat()
        state["_modified_on"] = aggregate.modified_on.isoformat()
        return cls(
            originator_id=aggregate.id,
            originator_version=aggregate.version,
            topic=get_topic(type(aggregate)),
            state=state,
        )

    def mutate(self, _: None) -> Any:
        """The aggregate this snapshot holds, ready for the events after it.

        Called by the library's projector when it replays from a snapshot.
        """
        aggregate_class = resolve_topic(self.topic)
        state = copy_value(dict(self.state))
        for key in ("_created_on", "_modified_on"):
            if isinstance(state[key], str):
                state[key] = datetime.fromisoformat(state[key])
        state["_id"] = self.originator_id
        state["_version"] = self.originator_version
        state["_pending_events"] = []
        aggregate = object.__new__(aggregate_class)
        object.__setattr__(aggregate, "__dict__", state)
        return aggregate


class WorkspaceAggregate(BaseAggregate[UUID]):
    """Base of Chain, Document and Agent: deletion, the undo/redo stacks, state in and out.

    Subclasses define `state()` and `set_state()` over the fields their contract names.
    """

    stream_type: ClassVar[str]
    # The state's personal fields (domain.personal): encrypted in snapshots as in events.
    personal_state: ClassVar[tuple[str, ...]] = ()
    deleted_event: ClassVar[type[Deleted]]
    undone_event: ClassVar[type[Undone]]
    redone_event: ClassVar[type[Redone]]
    Snapshot = WorkspaceSnapshot

    @staticmethod
    def create_id(*_: Any, **__: Any) -> UUID:
        """A new stream's id when none is given: a UUIDv7, so stream ids arrive in order."""
        return uuid7()

    def __init__(self) -> None:
        self.deleted = False
        self.undo_stack: list[list[int]] = []
        self.redo_stack: list[list[int]] = []
        # Set while a multi-event change (a node removal's edge deletions) is being applied.
        self.group_start: int | None = None

    def __deepcopy__(self, memo: dict[int, Any]) -> WorkspaceAggregate:
        """A copy sharing nothing mutable with this aggregate, made without copy's generic walk.

        The repository copies each cached aggregate a command loads. The undo and redo stacks
        (up to UNDO_DEPTH pairs of ints each) are copied as lists of the same pairs; immutable values
        (ids, timestamps, text, numbers) are shared; anything else is copied (domain.copies).
        """
        state: dict[str, Any] = {}
        for key, value in self.__dict__.items():
            if key in ("undo_stack", "redo_stack"):
                state[key] = list(value)  # their pairs are moved between stacks, never changed in place
            else:
                state[key] = copy_value(value)
        aggregate = object.__new__(type(self))
        object.__setattr__(aggregate, "__dict__", state)
        return aggregate

    # -- new events: their payloads within domain.bounds ----------------------------------------

    @classmethod
    def _create(cls, event_class: type[Any], *, id: UUID | None = None, **kwargs: Any) -> Any:  # noqa: A002
        """The library's _create; an event field out of domain.bounds is a DomainError naming it.

        (The events are not refused in their own __init__: pydantic would then run it when the
        mapper reads stored events too, which must load whatever bounds held when they were written.)
        """
        try:
            return super()._create(event_class, id=id, **kwargs)
        except ValidationError as exc:
            raise refusal(exc, event_class.__name__) from None

    def trigger_event(self, event_class: type[Any], **kwargs: Any) -> None:
        """The library's trigger_event; an event field out of domain.bounds is a DomainError naming it."""
        try:
            super().trigger_event(event_class, **kwargs)
        except ValidationError as exc:
            raise refusal(exc, event_class.__name__) from None

    # -- state -------------------------------------------------------------------------------

    # The keys of the contract's undo/redo `state`, and the attribute of any key named otherwise.
    state_fields: ClassVar[tuple[str, ...]] = ()
    state_attributes: ClassVar[dict[str, str]] = {}

    def state(self) -> dict[str, Any]:
        """The stream's state as the event contract describes it (a fresh deep copy).

        Undo/redo bookkeeping is not part of it.
        """
        return copy_value({key: getattr(self, self.state_attributes.get(key, key)) for key in self.state_fields})

    def set_state(self, state: dict[str, Any]) -> None:
        """Replace the aggregate's state with `state` (as `state()` returns it).

        Used by undo and redo; bookkeeping is left alone.
        """
        state = copy_value(state)
        for key in self.state_fields:
            setattr(self, self.state_attributes.get(key, key), state[key])

    def check_not_deleted(self) -> None:
        """Refuse a change to a deleted stream.

        Raises <stream_type>_deleted.
        """
        if self.deleted:
            raise DomainError(
                f"{self.stream_type}_deleted",
                f"{self.stream_type} {self.id} is deleted: no change is allowed",
                field=f"{self.stream_type}_id",
            )

    def delete(self, reason: str | None = None) -> None:
        """Delete the stream; it accepts no change afterwards (a document's restore, or undo, brings it back).

        Raises <stream_type>_deleted if it already is.
        """
        self.check_not_deleted()
        check_text(reason, "reason", max_bytes=MAX_REASON_CHARS, allow_none=True)
        self.trigger_event(self.deleted_event, reason=reason)

    # -- undo and redo: deciding -------------------------------------------------------------

    def undo(self, state_at: StateAt) -> None:
        """Undo the latest change not yet undone, returning the stream to its state before it.

        `state_at(version)` gives the stream's state at an earlier version. Raises nothing_to_undo.
        """
        change_version, before_version = self._latest("undo", self.undo_stack)
        self.trigger_event(self.undone_event, undone_version=change_version, to_version=before_version,
                           state=state_at(before_version))

    def redo(self, state_at: StateAt) -> None:
        """Re-apply the latest undone change, giving the stream the state that change made.

        `state_at(version)` gives the stream's state at an earlier version. Raises nothing_to_redo.
        """
        change_version, _ = self._latest("redo", self.redo_stack)
        self.trigger_event(self.redone_event, redone_version=change_version, to_version=change_version,
                           state=state_at(change_version))

    def _latest(self, action: str, stack: list[list[int]]) -> list[int]:
        """The top [change_version, before_version] pair of the undo or redo stack; nothing_to_<action> if empty."""
        if not stack:
            raise DomainError(f"nothing_to_{action}", f"{self.stream_type} {self.id} has nothing to {action}")
        return stack[-1]

    # -- undo and redo: applying (called by events' apply, also on replay) -------------------

    def record_change(self, change_version: int) -> None:
        """A change event is being applied: it can be undone, and nothing can be redone now.

        A change made of several events is undone as one, back to before its first event.
        """
        before_version = self.group_start if self.group_start is not None else change_version - 1
        self.group_start = None
        self.undo_stack.append([change_version, before_version])
        del self.undo_stack[:-UNDO_DEPTH]
        self.redo_stack.clear()

    def begin_group(self, event_version: int) -> None:
        """The first events of a multi-event change: undo will go back to before them.

        The change is recorded when its last event calls `record_change`.
        """
        if self.group_start is None:
            self.group_start = event_version - 1
        self.redo_stack.clear()

    def apply_undone(self, event: Undone) -> None:
        """Move the undone change from the undo stack to the redo stack and take its state.

        Called by Undone.apply.
        """
        self.redo_stack.append(self.undo_stack.pop())
        self.set_state(event.state)

    def apply_redone(self, event: Redone) -> None:
        """Move the redone change back to the undo stack (bounded) and take its state.

        Called by Redone.apply.
        """
        self.undo_stack.append(self.redo_stack.pop())
        del self.undo_stack[:-UNDO_DEPTH]
        self.set_state(event.state)
