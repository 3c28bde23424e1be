"""The workspace's validation rules: names, identifiers and bounded sizes.

Every check raises a DomainError whose code names the rule and whose field names the input.
"""

from __future__ import annotations

import json
import re
from typing import Any
from uuid import UUID

from domain.errors import DomainError

# Sizes are bounded so that one event (an undo event carries a stream's whole state)
# always fits the event store's payload limit.
MAX_NAME_CHARS = 200
MAX_TITLE_CHARS = 500
MAX_DESCRIPTION_CHARS = 10_000
MAX_REASON_CHARS = 1_000
MAX_CONTENT_BYTES = 256 * 1024
MAX_BODY_BYTES = 256 * 1024
MAX_METADATA_BYTES = 16 * 1024
MAX_PROMPT_BYTES = 64 * 1024
MAX_TOOLS = 64
MAX_TOOLS_BYTES = 64 * 1024
MAX_CANVAS_BYTES = 128 * 1024
MAX_VIEWPORT_BYTES = 4 * 1024
MAX_POSITION_BYTES = 512
MAX_EDGE_METADATA_BYTES = 1024
MAX_NODES = 200
MAX_EDGES = 400
MAX_TAGS = 100
MAX_EXECUTION_IO_BYTES = 256 * 1024
# Undo reaches back this many changes; older ones drop off the bottom of the stack.
UNDO_DEPTH = 100

# namespace, document type, tag, edge type: lower-case words joined by _ . : -
IDENTIFIER = re.compile(r"^[a-z0-9][a-z0-9_.:-]{0,63}$")
# node and edge ids are chosen by the canvas client
ELEMENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
# model names such as "gpt-4o", "anthropic/claude-3.5-sonnet"
MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:/@-]{0,127}$")
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
    if "\x00" in value:
        raise DomainError("invalid_text", f"{field} must not contain NUL characters", field=field)
    if len(value.encode("utf-8")) > max_bytes:
        raise DomainError("too_large", f"{field} is larger than {max_bytes} bytes", field=field)
    return value


def check_object(value: Any, field: str, *, max_bytes: int) -> dict[str, Any]:
    """A JSON object (metadata, body, canvas state...): string keys, JSON values, bounded size.

    Returns the value; raises invalid_json or too_large.
    """
    if not isinstance(value, dict):
        raise DomainError("invalid_json", f"{field} must be a JSON object", field=field)
    check_json(value, field, max_bytes=max_bytes)
    return value


def check_json(value: Any, field: str, *, max_bytes: int) -> Any:
    """Any JSON value of at most `max_bytes` when serialised.

    Returns the value; raises invalid_json or too_large.
    """
    try:
        text = json.dumps(value, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError):
        raise DomainError("invalid_json", f"{field} must be plain JSON", field=field) from None
    if "\\u0000" in text:
        raise DomainError("invalid_json", f"{field} must not contain NUL characters", field=field)
    if len(text.encode("utf-8")) > max_bytes:
        raise DomainError("too_large", f"{field} is larger than {max_bytes} bytes", field=field)
    return value


def check_count(value: Any, field: str, *, minimum: int = 0) -> int:
    """A whole number not below `minimum` (tokens, durations, versions).

    Returns the value; raises invalid_number.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise DomainError("invalid_number", f"{field} must be an integer >= {minimum}", field=field)
    return value


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
