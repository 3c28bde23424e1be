"""The workspace's validation rules: names, identifiers and bounded sizes.

Every check raises a DomainError whose code names the rule and whose field names the input.
The sizes and storage bounds themselves (and the NUL, surrogate, NaN and depth checks) are
domain.bounds'; the checks here apply them where the aggregates decide.
"""

from __future__ import annotations

import re
from typing import Any
from uuid import UUID

from pydantic_core import PydanticCustomError

from domain import bounds
from domain.bounds import (  # noqa: F401 - re-exported: the aggregates import their sizes from here
    MAX_BODY_BYTES,
    MAX_CANVAS_BYTES,
    MAX_CHANGE_DESCRIPTION_CHARS,
    MAX_CONTENT_BYTES,
    MAX_DESCRIPTION_CHARS,
    MAX_EDGE_METADATA_BYTES,
    MAX_EXECUTION_IO_BYTES,
    MAX_METADATA_BYTES,
    MAX_NAME_CHARS,
    MAX_POSITION_BYTES,
    MAX_PROMPT_BYTES,
    MAX_REASON_CHARS,
    MAX_TITLE_CHARS,
    MAX_TOOLS_BYTES,
    MAX_VIEWPORT_BYTES,
)
from domain.errors import DomainError

MAX_TOOLS = 64
MAX_NODES = 200
MAX_EDGES = 400
MAX_TAGS = 100
# Undo reaches back this many changes; older ones drop off the bottom of the stack.
UNDO_DEPTH = 100

# namespace, document type, tag, edge type: lower-case words joined by _ . : -
IDENTIFIER = re.compile(rf"^[a-z0-9][a-z0-9_.:-]{{0,{bounds.MAX_IDENTIFIER_CHARS - 1}}}$")
# node and edge ids are chosen by the canvas client
ELEMENT_ID = re.compile(rf"^[A-Za-z0-9][A-Za-z0-9_.:-]{{0,{bounds.MAX_IDENTIFIER_CHARS - 1}}}$")
# model names such as "gpt-4o", "anthropic/claude-3.5-sonnet"
MODEL_NAME = re.compile(rf"^[A-Za-z0-9][A-Za-z0-9_.:/@-]{{0,{bounds.MAX_MODEL_CHARS - 1}}}$")
CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
NODE_KINDS = ("document", "agent")


def check_name(value: Any, field: str, *, max_chars: int = MAX_NAME_CHARS) -> str:
    """A display name or title: a non-blank string without control characters, bounded.

    Returns the value; raises invalid_name or too_large.
    """
    if not isinstance(value, str) or not value.strip():
        raise DomainError("invalid_name", f"{field} must be a non-blank string", field=field)
    if len(value) > max_chars:
        raise DomainError("too_large", f"{field} is longer than {max_chars} characters", field=field)
    if CONTROL_CHARS.search(value) or "\n" in value or "\r" in value:
        raise DomainError("invalid_name", f"{field} must not contain control characters", field=field)
    return value


def check_identifier(value: Any, field: str, pattern: re.Pattern[str] = IDENTIFIER) -> str:
    """A machine name (namespace, type, tag, node id, model...): matches `pattern`.

    Returns the value; raises invalid_identifier.
    """
    if not isinstance(value, str) or not pattern.match(value):
        raise DomainError(
            "invalid_identifier",
            f"{field} {str(value)[:80]!r} must match {pattern.pattern}",
            field=field,
        )
    return value


def check_text(value: Any, field: str, *, max_bytes: int, allow_none: bool = False) -> str | None:
    """Free text (description, content, reason, prompt): a string of at most `max_bytes` UTF-8 bytes.

    Returns the value; raises invalid_text or too_large.
    """
    if value is None and allow_none:
        return None
    if not isinstance(value, str):
        raise DomainError("invalid_text", f"{field} must be a string", field=field)
    _bounded(field, bounds.check_string, value, max_bytes=max_bytes)
    return value


def check_object(value: Any, field: str, *, max_bytes: int) -> dict[str, Any]:
    """A JSON object (metadata, body, canvas state...): string keys, JSON values, bounded size.

    Returns the value; raises invalid_json or too_large.
    """
    _bounded(field, bounds.check_object, value, max_bytes)
    return value


def check_json(value: Any, field: str, *, max_bytes: int) -> Any:
    """Any JSON value of at most `max_bytes` when serialised, as domain.bounds.check_json.

    Returns the value; raises invalid_json or too_large.
    """
    _bounded(field, bounds.check_json, value, max_bytes)
    return value


def check_count(value: Any, field: str, *, minimum: int = 0, maximum: int = bounds.EXACT_INT_MAX) -> int:
    """A whole number from `minimum` to `maximum` (tokens, durations, versions).

    Returns the value; raises invalid_number.
    """
    _bounded(field, bounds.check_integer, value, minimum, maximum)
    return value


def _bounded(field: str, check: Any, *args: Any, **kwargs: Any) -> None:
    """Run a domain.bounds check; its refusal becomes a DomainError naming `field`."""
    try:
        check(*args, **kwargs)
    except PydanticCustomError as exc:
        raise DomainError(exc.type, f"{field} {exc.message()}", field=field) from None


def check_stream_id(value: Any, field: str) -> str:
    """A stream id: an aggregate UUID in its canonical lower-case string form.

    Returns the value; raises invalid_identifier.
    """
    try:
        if isinstance(value, str) and str(UUID(value)) == value:
            return value
    except ValueError:
        pass
    raise DomainError("invalid_identifier", f"{field} must be a UUID string", field=field)
