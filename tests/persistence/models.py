"""Small aggregates and applications for the persistence tests.

Dog: the library's ordinary dataclass-style events (stored under their topic).
Note: pydantic events registered under stable names in a registry of the tests' own
(EVENT_REGISTRY_TOPIC), so Chronicle's global registry is left alone.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar
from uuid import UUID, uuid4

from pydantic import BaseModel, ConfigDict, Field

from domain.event_types import EventTypeRegistry
from eventsourcing.application import Application
from eventsourcing.domain import (
    Aggregate,
    BaseAggregate,
    CanInitAggregate,
    CanMutateAggregate,
    datetime_now_with_tzinfo,
    event,
)
from eventsourcing.utils import get_topic

registry = EventTypeRegistry()
REGISTRY_TOPIC = "tests.persistence.models:registry"


# -- the library's dataclass-style events ------------------------------------------------------


class Dog(Aggregate):
    @event("Registered")
    def __init__(self, name: str) -> None:
        self.name = name
        self.tricks: list[str] = []

    @event("TrickAdded")
    def add_trick(self, trick: str) -> None:
        self.tricks.append(trick)


class DogSchool(Application[UUID]):
    snapshotting_intervals: ClassVar[dict[type[Any], int]] = {Dog: 2}

    def register_dog(self, name: str, **kwargs: Any) -> UUID:
        dog = Dog(name)
        self.save(dog, **kwargs)
        return dog.id

    def add_trick(self, dog_id: UUID, trick: str, **kwargs: Any) -> Any:
        dog: Dog = self.repository.get(dog_id)
        dog.add_trick(trick)
        return self.save(dog, **kwargs)


class OtherSchool(DogSchool):
    """A second application in the same database: its own notification log."""


# -- pydantic events under stable names --------------------------------------------------------


class NoteEvent(BaseModel, CanMutateAggregate[UUID]):
    model_config = ConfigDict(extra="forbid", frozen=True)

    originator_id: UUID
    originator_version: int
    timestamp: datetime = Field(default_factory=datetime_now_with_tzinfo)


class NoteAggregate(BaseAggregate[UUID]):
    @staticmethod
    def create_id(*_: Any, **__: Any) -> UUID:
        return uuid4()

    class Event(NoteEvent):
        pass

    class Created(Event, CanInitAggregate[UUID]):
        originator_topic: str


class Note(NoteAggregate):
    @event("Written")
    def __init__(self, title: str, body: str) -> None:
        self.title = title
        self.body = body

    @event("Edited")
    def edit(self, body: str, reason: str) -> None:
        self.body = body


# Stable names; Edited is at schema version 2 (v1 had no `reason`).
registry.register("note.written")(Note.Written)
registry.register("note.edited", schema_version=2)(Note.Edited)


@registry.upcaster("note.edited", 1)
def _edited_v1_to_v2(payload: dict[str, Any]) -> dict[str, Any]:
    return {**payload, "reason": "(not recorded)"}


class Notebook(Application[UUID]):
    env: ClassVar[dict[str, str]] = {"EVENT_REGISTRY_TOPIC": REGISTRY_TOPIC}

    def write(self, title: str, body: str, **kwargs: Any) -> UUID:
        note = Note(title, body)
        self.save(note, **kwargs)
        return note.id


__all__ = ["Dog", "DogSchool", "Note", "Notebook", "OtherSchool", "get_topic", "registry"]
