"""Checks of an append's parts before anything is written, and their texts for the append statement.

Each refusal is an InvalidAppend naming the field at fault (the API answers it with a 4xx).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ValidationError

from infrastructure.append_statement import ExpectedKind
from infrastructure.errors import InvalidAppend
from infrastructure.store_types import (
    ANY,
    JSON_NUL,
    NO_STREAM,
    EncodedPayload,
    EventMetadata,
    ExpectedVersion,
    NewEvent,
    StreamExistence,
)


def unregistered_payload(index: int, event: NewEvent, stream_type: str | None) -> str:
    """The JSON text of an event whose type has no registered model (a library topic)."""
    if stream_type is None:
        raise InvalidAppend(f"event {index} has an unregistered type: name the stream type", field="stream_type")
    if not event.type or len(event.type) > 500:
        raise InvalidAppend(f"event {index} type must be 1-500 characters", field=f"events.{index}.type")
    payload = event.payload.model_dump(mode="json") if isinstance(event.payload, BaseModel) else event.payload
    if not isinstance(payload, Mapping):
        raise InvalidAppend(f"event {index} payload must be an object", field=f"events.{index}.payload")
    if type(payload) is EncodedPayload:
        return payload.text
    try:
        return json.dumps(dict(payload), separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidAppend(f"event {index} payload is not JSON: {exc}", field=f"events.{index}.payload") from None


def check_json(text: str, max_bytes: int, index: int | None = None) -> None:
    """Refuse event `index`'s payload (or the metadata) if over `max_bytes` in UTF-8 or holding a NUL.

    jsonb cannot store a NUL character. A character is at most 4 bytes in UTF-8, so only long
    texts are encoded to be measured.
    """
    too_long = len(text) * 4 > max_bytes and len(text.encode()) > max_bytes
    if too_long or _holds_nul(text):
        what, field = ("metadata", "metadata") if index is None else (f"event {index} payload", f"events.{index}.payload")
        problem = f"is larger than {max_bytes} bytes" if too_long else "holds a NUL character, which jsonb cannot store"
        raise InvalidAppend(f"{what} {problem}", field=field)


def _holds_nul(text: str) -> bool:
    """Whether JSON text holds an escaped NUL character, which jsonb refuses.

    The substring test is nearly free; the regex (which skips escaped backslashes) is not.
    """
    return "\\u0000" in text and JSON_NUL.search(text) is not None


def expected_kind(expected: ExpectedVersion) -> tuple[ExpectedKind, int | None]:
    """Which claim of the append statement an expected version takes, and its parameter.

    The parameter is None for any, 0 for no stream yet, N for version N.
    """
    if expected is ANY:
        return "any", None
    if expected is NO_STREAM:
        return "no_stream", 0
    if isinstance(expected, bool) or not isinstance(expected, int) or expected < 0:
        raise InvalidAppend(
            f"expected version must be a version >= 0, 'no stream' or 'any', not {expected!r}",
            field="expected_version",
        )
    return ("version", expected) if expected else ("no_stream", 0)


def describe(expected: ExpectedVersion) -> object:
    return expected.value if isinstance(expected, StreamExistence) else expected


def metadata_json(metadata: EventMetadata | Mapping[str, Any] | None) -> str:
    """Metadata as compact JSON text, None fields left out.

    Serialised by the model's pydantic-core serialiser, called directly: what model_dump_json
    calls, at half its cost on the append path.
    """
    if metadata is None:
        return "{}"
    if isinstance(metadata, EventMetadata):
        return EventMetadata.__pydantic_serializer__.to_json(metadata, exclude_none=True).decode()
    try:
        validated = EventMetadata.model_validate(dict(metadata))
        return EventMetadata.__pydantic_serializer__.to_json(validated, exclude_none=True).decode()
    except ValidationError as exc:
        first = exc.errors()[0]
        name = ".".join(str(part) for part in first["loc"])
        raise InvalidAppend(f"metadata field {name!r}: {first['msg']}", field=f"metadata.{name}") from None
    except (TypeError, ValueError) as exc:
        raise InvalidAppend(f"metadata is not valid: {exc}", field="metadata") from None
