"""The registry of typed events: a pydantic model per stable type name and schema version.

Pure Python, no I/O. The event store validates every payload here before it writes, and
upcasts old schema versions here when it reads.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

TYPE_NAME = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]
M = TypeVar("M", bound=type[BaseModel])


class EventTypeError(ValueError):
    """Base of the errors about an event's type or payload. `field` names what is wrong."""

    code = "invalid_event"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class UnknownEventType(EventTypeError):
    code = "unknown_event_type"


class InvalidEventPayload(EventTypeError):
    code = "invalid_event_payload"


@dataclass(frozen=True)
class EventType:
    """One registered type: its name, current schema version, model and stream type."""

    name: str
    schema_version: int
    model: type[BaseModel]
    stream_type: str
    # The model's `omit_unset_fields` class attribute: store only the fields a writer gave.
    omit_unset: bool = False

    def json_schema(self) -> dict[str, Any]:
        return self.model.model_json_schema()


class EventTypeRegistry:
    """Type name -> current model, plus the upcasters that bring old versions up to it."""

    def __init__(self) -> None:
        self._types: dict[str, EventType] = {}
        self._upcasters: dict[tuple[str, int], Upcaster] = {}

    def register(
        self, name: str, *, schema_version: int = 1, stream_type: str | None = None
    ) -> Callable[[M], M]:
        """Class decorator: register a pydantic model as the current schema of `name`."""
        if not TYPE_NAME.match(name):
            raise ValueError(f"event type name {name!r} must look like 'stream.event_name'")
        if schema_version < 1:
            raise ValueError("schema_version starts at 1")

        def decorate(model: M) -> M:
            existing = self._types.get(name)
            if existing is not None and existing.model is not model:
                raise ValueError(f"event type {name!r} is already registered")
            self._types[name] = EventType(
                name, schema_version, model, stream_type or name.split(".", 1)[0],
                omit_unset=bool(getattr(model, "omit_unset_fields", False)),
            )
            return model

        return decorate

    def upcaster(self, name: str, from_version: int) -> Callable[[Upcaster], Upcaster]:
        """Decorator: a function turning a `from_version` payload into `from_version + 1`."""

        def decorate(fn: Upcaster) -> Upcaster:
            self._upcasters[(name, from_version)] = fn
            return fn

        return decorate

    def get(self, name: str) -> EventType:
        try:
            return self._types[name]
        except KeyError:
            raise UnknownEventType(f"unknown event type {name!r}", field="type") from None

    def name_of(self, model: type) -> str | None:
        """The type name a model is registered under, or None."""
        for event_type in self._types.values():
            if event_type.model is model:
                return event_type.name
        return None

    def __contains__(self, name: object) -> bool:
        return name in self._types

    def __iter__(self):
        return iter(self._types.values())

    def validate(
        self,
        name: str,
        payload: Mapping[str, Any] | BaseModel,
        envelope: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The payload as clean JSON-able data, or an error naming the offending field.

        Defaults are filled in, unless the model sets `omit_unset_fields = True` (then only
        the fields the writer gave are kept: an update stores just what changed). `envelope` holds fields the store keeps in columns (an eventsourcing event's
        originator id and version): validated with the payload, left out of the result.
        """
        model, exclude = self._validated(name, payload, envelope)
        return model.model_dump(mode="json", exclude=exclude, exclude_unset=self.get(name).omit_unset)

    def validate_json(
        self,
        name: str,
        payload: Mapping[str, Any] | BaseModel,
        envelope: Mapping[str, Any] | None = None,
    ) -> str:
        """`validate`, but the payload as compact JSON text, serialised once by pydantic.

        The event store's append path uses this: it is several times cheaper than dict + json.dumps.
        """
        model, exclude = self._validated(name, payload, envelope)
        return model.model_dump_json(exclude=exclude, exclude_unset=self.get(name).omit_unset)

    def _validated(
        self,
        name: str,
        payload: Mapping[str, Any] | BaseModel,
        envelope: Mapping[str, Any] | None,
    ) -> tuple[BaseModel, set[str] | None]:
        """The payload as an instance of its registered model, and the envelope fields to leave out."""
        event_type = self.get(name)
        if isinstance(payload, BaseModel) and not envelope:
            if not isinstance(payload, event_type.model):
                raise InvalidEventPayload(
                    f"{name} expects a {event_type.model.__name__}, got {type(payload).__name__}",
                    field="payload",
                )
            return payload, None
        if isinstance(payload, BaseModel):
            payload = payload.model_dump(mode="json")
        if not isinstance(payload, Mapping):
            raise InvalidEventPayload(f"{name} payload must be an object", field="payload")
        try:
            model = event_type.model.model_validate({**payload, **(envelope or {})})
        except ValidationError as exc:
            first = exc.errors()[0]
            field = ".".join(str(part) for part in first["loc"]) or "payload"
            raise InvalidEventPayload(
                f"{name} payload field {field!r}: {first['msg']}", field=f"payload.{field}"
            ) from None
        return model, set(envelope) if envelope else None

    def upcast(self, name: str, schema_version: int, payload: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """Bring a stored payload up to the current schema version, one step at a time."""
        if name not in self._types:
            return schema_version, payload
        current = self._types[name].schema_version
        while schema_version < current:
            step = self._upcasters.get((name, schema_version))
            if step is None:
                raise UnknownEventType(
                    f"no upcaster for {name} from schema version {schema_version}", field="schema_version"
                )
            payload = step(dict(payload))
            schema_version += 1
        return schema_version, payload


# The registry Chronicle's own event types register into.
registry = EventTypeRegistry()
