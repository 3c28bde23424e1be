"""Bounds at the door: every value a projection stores fits its column, stated once, as types.

Commands, event payloads and the HTTP request models use these annotated types, so a value
a snapshot table cannot hold is refused before anything is appended, on every path in:
integers within their column's range, text without NUL characters or unpaired surrogates
and short enough for the btree indexes over it, JSON finite, plain and shallow.
docs/design/bounds.md lists each stored column and the type that protects it.

Events already in the log are history, not input: the mapper reads them with
`STORED_CONTEXT`, which skips these checks, so a stream holding an event from before a
bound still loads.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler, ValidationError
from pydantic_core import PydanticCustomError, core_schema

from domain.errors import DomainError

# -- column ranges -----------------------------------------------------------------------------
INT4_MAX = 2**31 - 1  # integer columns (document versions)
INT8_MAX = 2**63 - 1  # bigint columns (stream versions, positions)
# The largest integer a double precision column (and a JSON reader using doubles) holds exactly.
EXACT_INT_MAX = 2**53 - 1
# A btree index entry fails above ~2704 bytes (a third of an 8 kB page). Indexed text is
# bounded in characters far below it: 4 UTF-8 bytes a character at most.
BTREE_ENTRY_MAX_BYTES = 2704

# -- sizes (also the domain's rules: one event, an undo's whole state, fits the payload limit) --
MAX_NAME_CHARS = 200
MAX_TITLE_CHARS = 500
MAX_IDENTIFIER_CHARS = 64  # namespace, document and edge type, tag, node/edge/execution id, node kind and ref
MAX_MODEL_CHARS = 128  # an agent's model name
MAX_CONTEXT_ID_CHARS = 200  # actor, session, correlation and causation ids (event metadata)
MAX_DESCRIPTION_CHARS = 10_000
MAX_REASON_CHARS = 1_000
MAX_CHANGE_DESCRIPTION_CHARS = 1_000
MAX_CONTENT_BYTES = 256 * 1024
MAX_BODY_BYTES = 256 * 1024
MAX_METADATA_BYTES = 16 * 1024
MAX_PROMPT_BYTES = 64 * 1024
MAX_TOOLS_BYTES = 64 * 1024
MAX_CANVAS_BYTES = 128 * 1024
MAX_VIEWPORT_BYTES = 4 * 1024
MAX_POSITION_BYTES = 512
MAX_EDGE_METADATA_BYTES = 1024
MAX_EXECUTION_IO_BYTES = 256 * 1024
# Free-form JSON nests at most this many arrays/objects deep (readers recurse over it).
MAX_JSON_DEPTH = 32

assert MAX_CONTEXT_ID_CHARS * 4 < BTREE_ENTRY_MAX_BYTES and MAX_NAME_CHARS * 4 < BTREE_ENTRY_MAX_BYTES

# The error codes a bound raises (pydantic error types and DomainError codes alike).
BOUND_CODES = frozenset({"invalid_number", "invalid_text", "invalid_json", "too_large"})
# Validation context under which stored events are read: the bounds are not checked.
_STORED = "chronicle_stored_event"
STORED_CONTEXT: dict[str, Any] = {_STORED: True}


@dataclass(frozen=True)
class Bound:
    """Pydantic metadata: run `check` on a value (not None) unless reading stored events.

    `schema` is added to the field's JSON schema, so OpenAPI publishes the bound.
    """

    check: Callable[[Any], None]
    schema: tuple[tuple[str, Any], ...] = ()  # a tuple: Annotated metadata must be hashable

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        def validate(value: Any, info: core_schema.ValidationInfo) -> Any:
            if value is not None and not (info.context and info.context.get(_STORED)):
                self.check(value)
            return value

        return core_schema.with_info_after_validator_function(validate, handler(source))

    def __get_pydantic_json_schema__(self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler) -> Any:
        result = handler(schema)
        if isinstance(result, dict) and "$ref" not in result:
            result.update(dict(self.schema))
        return result


# -- checks ------------------------------------------------------------------------------------

def check_integer(value: Any, minimum: int, maximum: int) -> None:
    """Refuse a number outside [minimum, maximum] (invalid_number)."""
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise PydanticCustomError(
            "invalid_number", "must be an integer from {minimum} to {maximum}", {"minimum": minimum, "maximum": maximum}
        )


def check_string(value: str, *, max_chars: int | None = None, max_bytes: int | None = None) -> None:
    """Refuse text PostgreSQL cannot store (NUL, unpaired surrogate: invalid_text) or too long (too_large)."""
    if "\x00" in value:
        raise PydanticCustomError("invalid_text", "must not contain NUL characters")
    if not value.isascii():
        try:
            encoded = value.encode("utf-8")
        except UnicodeEncodeError:
            raise PydanticCustomError("invalid_text", "must not contain unpaired surrogates") from None
    else:
        encoded = None
    if max_chars is not None and len(value) > max_chars:
        raise PydanticCustomError("too_large", "is longer than {limit} characters", {"limit": max_chars})
    if max_bytes is not None and len(value) * 4 > max_bytes:
        size = len(encoded if encoded is not None else value)
        if size > max_bytes:
            raise PydanticCustomError("too_large", "is larger than {limit} bytes", {"limit": max_bytes})


def check_json(value: Any, max_bytes: int) -> None:
    """Refuse JSON jsonb or a reader cannot take back as it was (invalid_json), or too big (too_large).

    Plain JSON only: string keys, finite numbers, integers within bigint, no NUL or unpaired
    surrogate in any key or string, at most MAX_JSON_DEPTH arrays/objects deep.
    """
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if item is None or isinstance(item, bool):
            continue
        if isinstance(item, str):
            _json_string(item)
        elif isinstance(item, int):
            if not -INT8_MAX <= item <= INT8_MAX:
                raise PydanticCustomError("invalid_json", "holds an integer beyond ±(2**63-1)")
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise PydanticCustomError("invalid_json", "holds a number that is not finite (NaN or Infinity)")
        elif isinstance(item, (dict, list)):
            if depth >= MAX_JSON_DEPTH:
                raise PydanticCustomError("invalid_json", "nests deeper than {limit} levels", {"limit": MAX_JSON_DEPTH})
            if isinstance(item, dict):
                for key, sub in item.items():
                    if not isinstance(key, str):
                        raise PydanticCustomError("invalid_json", "has a key that is not a string")
                    _json_string(key)
                    stack.append((sub, depth + 1))
            else:
                stack.extend((sub, depth + 1) for sub in item)
        else:
            raise PydanticCustomError("invalid_json", "must be plain JSON")
    size = len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))
    if size > max_bytes:
        raise PydanticCustomError("too_large", "is larger than {limit} bytes", {"limit": max_bytes})


def _json_string(text: str) -> None:
    try:
        check_string(text)
    except PydanticCustomError as exc:
        raise PydanticCustomError("invalid_json", "holds text that " + exc.message()) from None


def check_object(value: Any, max_bytes: int) -> None:
    """A JSON object (not a list or scalar), as check_json."""
    if not isinstance(value, dict):
        raise PydanticCustomError("invalid_json", "must be a JSON object")
    check_json(value, max_bytes)


# -- the types ---------------------------------------------------------------------------------

def integer(minimum: int, maximum: int) -> Bound:
    """The bound of an integer stored in a column of range [minimum, maximum]."""
    return Bound(lambda v: check_integer(v, minimum, maximum), (("minimum", minimum), ("maximum", maximum)))


def text(*, max_chars: int | None = None, max_bytes: int | None = None) -> Bound:
    """The bound of text stored in a text column (and any index over it)."""
    schema = (("maxLength", max_chars),) if max_chars is not None else ()
    return Bound(lambda v: check_string(v, max_chars=max_chars, max_bytes=max_bytes), schema)


def json_value(max_bytes: int) -> Bound:
    """The bound of any JSON value stored in a jsonb column."""
    return Bound(lambda v: check_json(v, max_bytes))


def json_object(max_bytes: int) -> Bound:
    """The bound of a JSON object stored in a jsonb column."""
    return Bound(lambda v: check_object(v, max_bytes))


# Numbers. Count: durations and token counts (a double precision column stores them exactly).
Count = Annotated[int, integer(0, EXACT_INT_MAX)]
DocumentVersion = Annotated[int, integer(1, INT4_MAX)]
StreamVersion = Annotated[int, integer(1, INT8_MAX)]
# Text.
Name = Annotated[str, text(max_chars=MAX_NAME_CHARS)]
Title = Annotated[str, text(max_chars=MAX_TITLE_CHARS)]
Identifier = Annotated[str, text(max_chars=MAX_IDENTIFIER_CHARS)]
ModelName = Annotated[str, text(max_chars=MAX_MODEL_CHARS)]
ContextId = Annotated[str, text(max_chars=MAX_CONTEXT_ID_CHARS)]
Description = Annotated[str, text(max_bytes=MAX_DESCRIPTION_CHARS)]
Reason = Annotated[str, text(max_bytes=MAX_REASON_CHARS)]
ChangeDescription = Annotated[str, text(max_bytes=MAX_CHANGE_DESCRIPTION_CHARS)]
Content = Annotated[str, text(max_bytes=MAX_CONTENT_BYTES)]
Prompt = Annotated[str, text(max_bytes=MAX_PROMPT_BYTES)]
# JSON.
Metadata = Annotated[dict[str, Any], json_object(MAX_METADATA_BYTES)]
EdgeMetadata = Annotated[dict[str, Any], json_object(MAX_EDGE_METADATA_BYTES)]
Body = Annotated[dict[str, Any], json_object(MAX_BODY_BYTES)]
CanvasState = Annotated[dict[str, Any], json_object(MAX_CANVAS_BYTES)]
Viewport = Annotated[dict[str, Any], json_object(MAX_VIEWPORT_BYTES)]
NodePosition = Annotated[dict[str, Any], json_object(MAX_POSITION_BYTES)]
Tools = Annotated[list[Any], json_value(MAX_TOOLS_BYTES)]
ExecutionData = Annotated[Any, json_value(MAX_EXECUTION_IO_BYTES)]


def refusal(error: ValidationError, what: str) -> DomainError:
    """The DomainError for a model's first validation error, naming the field.

    A bound keeps its code (too_large, invalid_number, ...); anything else is invalid_command.
    """
    first = error.errors(include_url=False)[0]
    field_name = ".".join(str(part) for part in first["loc"]) or None
    code = first["type"] if first["type"] in BOUND_CODES else "invalid_command"
    return DomainError(code, f"{what}: {field_name}: {first['msg']}", field=field_name)
