"""Domain events <-> the library's stored events, whose state is kept as a readable jsonb payload.

Chronicle refuses ciphers and compressors: auditors read payloads in the `events` table.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, cast
from uuid import UUID

from pydantic import BaseModel

from domain.aggregate import WorkspaceEvent
from domain.bounds import STORED_CONTEXT
from domain.event_types import EventTypeRegistry
from domain.event_types import registry as default_registry
from eventsourcing.domain import DomainEventProtocol, HasOriginatorIDVersion
from eventsourcing.persistence import (
    Cipher,
    Compressor,
    InfrastructureFactoryError,
    Mapper,
    MapperDeserialisationError,
    StoredEvent,
    Transcoder,
)
from eventsourcing.utils import get_topic, resolve_topic
from infrastructure.library_internals import event_wants_str_ids
from infrastructure.store_types import EncodedPayload

# A payload that is not a JSON object is kept, base64-encoded, under this one key.
BYTES_KEY = "_bytes_"
# Columns, not payload: the originator id and version of an eventsourcing event.
ENVELOPE = ("originator_id", "originator_version")


class UnreadablePayloadSettings(InfrastructureFactoryError, ValueError):
    """A cipher or compressor was configured: it would turn payloads into unreadable bytes."""


@dataclass(frozen=True)
class ChronicleStoredEvent(StoredEvent):
    """A StoredEvent that may carry the domain event's own id, so a re-sent save is idempotent.

    A registered pydantic event rides along too: the recorder appends it as it is, instead of
    decoding `state` back into a payload the store would validate and encode once more.
    """

    event_id: UUID | None = None
    domain_event: BaseModel | None = None


# -- payloads: bytes <-> jsonb ---------------------------------------------------------------


def payload_from_state(state: bytes) -> dict[str, Any]:
    """The jsonb payload for a stored event's state: the JSON object itself when it is one.

    Anything else (not UTF-8, not an object, NaN, NUL characters jsonb refuses) is kept
    base64-encoded under `_bytes_`, so every state round-trips.
    """
    try:
        text = state.decode("utf-8")
        value = _DECODER.decode(text)
    except (UnicodeDecodeError, ValueError):
        value = None
    else:
        if "\\u0000" in text:
            value = None
    if isinstance(value, dict) and set(value) != {BYTES_KEY}:
        return value
    return {BYTES_KEY: base64.b64encode(state).decode("ascii")}


def state_from_payload(payload: dict[str, Any]) -> bytes:
    """The stored event's state for a jsonb payload: the inverse of payload_from_state."""
    if set(payload) == {BYTES_KEY} and isinstance(payload[BYTES_KEY], str):
        return base64.b64decode(payload[BYTES_KEY])
    return _ENCODER.encode(payload).encode("utf-8")


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


# Made once: json.loads and json.dumps make a new decoder or encoder for each call given options.
_DECODER = json.JSONDecoder(parse_constant=_refuse_constant)
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


class _FloatFound(Exception):
    """The state holds a number with a fraction or exponent."""


def _float_found(_: str) -> Any:
    raise _FloatFound


# Decodes what payload_from_state does, but stops at the first float.
_DECODER_OF_NO_FLOATS = json.JSONDecoder(parse_constant=_refuse_constant, parse_float=_float_found)


def encoded_payload_from_state(state: bytes) -> dict[str, Any]:
    """payload_from_state's payload, with the state's own text when that is the JSON its encoding gives.

    It is unless the text holds a float (which JSON may spell otherwise, or which overflows):
    an EncodedPayload spares the store that encoding.
    """
    try:
        text = state.decode("utf-8")
        value = _DECODER_OF_NO_FLOATS.decode(text)
    except (UnicodeDecodeError, ValueError, _FloatFound):
        return payload_from_state(state)
    if type(value) is not dict or "\\u0000" in text or (len(value) == 1 and BYTES_KEY in value):
        return payload_from_state(state)
    return EncodedPayload(value, text)


# The envelope's fields, left out of the state (the serialiser takes a set).
_ENVELOPE_FIELDS = frozenset(ENVELOPE)
# The model_dump of each event class whose dump one serialiser call can give: the value is its
# exclude_unset (the workspace events' model_dump leaves out the fields an event was not given).
_PLAIN_DUMPS: dict[Any, bool] = {BaseModel.model_dump: False, WorkspaceEvent.model_dump: True}


def _event_json(event: BaseModel) -> bytes:
    """The event's state: its JSON dump without the envelope, as `model_dump(mode="json")` gives it.

    One call of the model's own serialiser where its model_dump is a known one (no Python dict,
    no second encoding); any other model_dump is honoured as it is.
    """
    exclude_unset = _PLAIN_DUMPS.get(type(event).model_dump)
    if exclude_unset is None:
        return _ENCODER.encode(event.model_dump(mode="json", exclude=set(ENVELOPE))).encode("utf-8")
    return event.__pydantic_serializer__.to_json(event, exclude=_ENVELOPE_FIELDS, exclude_unset=exclude_unset)


@lru_cache(maxsize=1024)
def _may_carry_event_id(cls: type[BaseModel]) -> bool:
    """Whether events of this pydantic class can have an `event_id`: a field, or the class has one.

    Asked once per class: pydantic answers a missing attribute by raising, which costs a save more.
    """
    return "event_id" in cls.model_fields or hasattr(cls, "event_id") or cls.__getattr__ is not BaseModel.__getattr__


def _id_text(originator_id: UUID | str) -> str:
    return str(originator_id)


# -- the mapper -------------------------------------------------------------------------------


class ChronicleMapper(Mapper[Any]):
    """Domain events <-> stored events whose state is a clean JSON object (stored as jsonb).

    Registered pydantic events use their stable type name; other events their topic.
    """

    def __init__(
        self,
        transcoder: Transcoder,
        compressor: Compressor | None = None,
        cipher: Cipher | None = None,
        registry: EventTypeRegistry = default_registry,
    ) -> None:
        refuse_unreadable_payloads(cipher, compressor)
        super().__init__(transcoder=transcoder)
        self.registry = registry

    def to_stored_event(self, domain_event: DomainEventProtocol[Any]) -> StoredEvent:
        """A pydantic event as its JSON dump; any other as the library's transcoded state."""
        registered, event_id = None, None
        if not isinstance(domain_event, BaseModel) or _may_carry_event_id(type(domain_event)):
            event_id = getattr(domain_event, "event_id", None)
        if isinstance(domain_event, BaseModel):
            name = self.registry.name_of(type(domain_event))
            topic = name or get_topic(type(domain_event))
            data = _event_json(domain_event)
            registered = domain_event if name else None
        else:
            stored = super().to_stored_event(domain_event)
            topic, data = stored.topic, stored.state
        return ChronicleStoredEvent(
            originator_id=domain_event.originator_id,
            originator_version=domain_event.originator_version,
            topic=topic,
            state=data,
            event_id=event_id if isinstance(event_id, UUID) else None,
            domain_event=registered,
        )

    def to_domain_event(self, stored_event: StoredEvent) -> DomainEventProtocol[Any]:
        """The event class for a type name or topic, built from the (upcast) payload.

        Stored events are history: domain.bounds' checks (for new input) are not applied to them.
        """
        if stored_event.topic in self.registry:
            cls: type = self.registry.get(stored_event.topic).model
        else:
            cls = resolve_topic(stored_event.topic)
        if isinstance(cls, type) and issubclass(cls, BaseModel):
            try:
                data = json.loads(stored_event.state)
                data["originator_id"] = _id_text(stored_event.originator_id)
                data["originator_version"] = stored_event.originator_version
                return cast(DomainEventProtocol[Any], cls.model_validate(data, context=STORED_CONTEXT))
            except ValueError as exc:
                raise MapperDeserialisationError(
                    f"stored event {stored_event.topic} {stored_event.originator_id}"
                    f" v{stored_event.originator_version} does not fit {cls.__name__}: {exc}"
                ) from exc
        return super().to_domain_event(_fit_originator_id(cls, stored_event))


def _fit_originator_id(cls: type, stored_event: StoredEvent) -> StoredEvent:
    """The stored event with a str originator id where the event class wants str ids.

    Notifications carry a UUID for any UUID-shaped stream id; a str-id aggregate wants text.
    """
    if isinstance(stored_event.originator_id, UUID):
        wants_str = False
        if isinstance(cls, type) and issubclass(cls, HasOriginatorIDVersion):
            wants_str = cls.originator_id_type is str
        else:
            wants_str = event_wants_str_ids(cls)
        if wants_str:
            return StoredEvent(
                str(stored_event.originator_id), stored_event.originator_version,
                stored_event.topic, stored_event.state,
            )
    return stored_event


def refuse_unreadable_payloads(cipher: Cipher | None, compressor: Compressor | None) -> None:
    """Refuse ciphers and compressors: Chronicle's payloads are jsonb auditors must read."""
    if cipher is not None or compressor is not None:
        what = " and ".join(n for n, v in (("a cipher", cipher), ("a compressor", compressor)) if v)
        raise UnreadablePayloadSettings(
            f"Chronicle stores event payloads as readable jsonb, so {what} cannot be used:"
            " unset CIPHER_TOPIC, CIPHER_KEY and COMPRESSOR_TOPIC"
            " (encrypt the database volume or sensitive fields instead)"
        )
