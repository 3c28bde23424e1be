"""The registry of typed events: a pydantic model per stable type name and schema version.

Pure Python, no I/O. The event store validates every payload here before it writes, and
upcasts old schema versions here when it reads.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from domain.personal import SEALED_SCHEMA, is_personal

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

    def stored_schema(self, envelope: Collection[str] = ()) -> dict[str, Any]:
        """The JSON Schema of this type's payload exactly as stored: no other field, `envelope`
        fields (kept in columns) left out, a field required when every stored payload has it.

        A model that stores only the fields a writer gave requires its fields without a default
        and those it always sets (its `always_stored_fields`); any other model stores them all.
        """
        schema = self.model.model_json_schema(mode="serialization")
        names = {name: field.serialization_alias or field.alias or name
                 for name, field in self.model.model_fields.items()}
        properties = {k: v for k, v in schema.get("properties", {}).items() if k not in envelope}
        for name, field in self.model.model_fields.items():
            if names[name] in properties and is_personal(field):
                # Stored sealed for its subject (or already erased, which the plain type allows).
                properties[names[name]] = {"anyOf": [properties[names[name]], SEALED_SCHEMA], "personal": True}
        always = set(getattr(self.model, "always_stored_fields", ()))
        required = [names[n] for n, f in self.model.model_fields.items() if names[n] in properties
                    and (not self.omit_unset or f.is_required() or n in always)]
        return {**schema, "properties": properties, "required": required, "additionalProperties": False}

    def payload_json(self, payload: Mapping[str, Any] | BaseModel, envelope: Mapping[str, Any] | None = None) -> str:
        """The payload validated against this type's model, as compact JSON text.

        Defaults are filled in, unless the model sets `omit_unset_fields = True` (then only the
        fields the writer gave are kept: an update stores just what changed). `envelope` holds
        fields the store keeps in columns (an eventsourcing event's originator id and version):
        validated with the payload, left out of the text. An invalid payload raises
        InvalidEventPayload naming the offending field.
        """
        model = self.model
        if type(payload) is not dict:  # a dict, the common case, needs neither check
            if isinstance(payload, BaseModel):
                if type(payload) is model:  # validated when it was made, its envelope fields too
                    return model.__pydantic_serializer__.to_json(
                        payload, exclude=set(envelope) if envelope else None, exclude_unset=self.omit_unset
                    ).decode()
                if not envelope:
                    if not isinstance(payload, model):
                        raise InvalidEventPayload(
                            f"{self.name} expects a {model.__name__}, got {type(payload).__name__}", field="payload"
                        )
                    return payload.model_dump_json(exclude_unset=self.omit_unset)
                payload = payload.model_dump(mode="json")
            elif not isinstance(payload, Mapping):
                raise InvalidEventPayload(f"{self.name} payload must be an object", field="payload")
        # The model's own pydantic-core validator and serialiser, called directly: what
        # model_validate and model_dump_json call, at half their cost on the append path.
        try:
            instance = model.__pydantic_validator__.validate_python({**payload, **envelope} if envelope else payload)
        except ValidationError as exc:
            raise self._invalid(exc) from None
        return model.__pydantic_serializer__.to_json(
            instance, exclude=set(envelope) if envelope else None, exclude_unset=self.omit_unset
        ).decode()

    def _invalid(self, error: ValidationError) -> InvalidEventPayload:
        """The first validation error, as an error naming the offending field."""
        first = error.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or "payload"
        return InvalidEventPayload(f"{self.name} payload field {field!r}: {first['msg']}", field=f"payload.{field}")


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
        """The registered type `name`, or UnknownEventType."""
        try:
            return self._types[name]
        except KeyError:
            raise UnknownEventType(f"unknown event type {name!r}", field="type") from None

    def find(self, name: str) -> EventType | None:
        """The registered type `name`, or None."""
        return self._types.get(name)

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

    def schema_versions(self) -> dict[str, int]:
        """The current schema version of every registered type, for readers that upcast many events."""
        return {name: t.schema_version for name, t in self._types.items()}

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
