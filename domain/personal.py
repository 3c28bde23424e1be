"""Personal fields: which event fields hold a person's data, and what an erased one reads as.

Pure Python, no I/O. An event model marks a top-level field with `PERSONAL` (pydantic field
metadata) and may name nested paths in `personal_paths`; the event store encrypts those values
with the data key of their subject before it writes, and a reader whose key is gone sees ERASED.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from pydantic import BaseModel

# Field metadata marking a personal field: `Annotated[Content | None, PERSONAL]`.
PERSONAL: dict[str, Any] = {"json_schema_extra": {"personal": True}}
# An erased text value; an erased JSON value is ERASED_OBJECT. Every read path shows these.
ERASED = "[erased]"
ERASED_OBJECT: dict[str, Any] = {"erased": True}
# How a personal value is stored: sealed for its data subject (infrastructure/personal_data.py
# writes it). The event contract (stored_schema) allows it in place of every personal field.
SEALED_SCHEMA: dict[str, Any] = {
    "title": "Sealed",
    "description": "a personal value, encrypted with its data subject's key (AES-256-GCM)",
    "type": "object",
    "properties": {
        "cipher": {"const": "AES-256-GCM"}, "subject": {"type": "string"}, "key_id": {"type": "string"},
        "kind": {"enum": ["text", "json"]}, "nonce": {"type": "string"}, "ciphertext": {"type": "string"},
    },
    "required": ["cipher", "subject", "key_id", "kind", "nonce", "ciphertext"],
    "additionalProperties": False,
}
# The subject of personal data written with neither a named subject nor an actor.
ANONYMOUS_SUBJECT = "anonymous"


def is_personal(field_info: Any) -> bool:
    """Whether a pydantic field carries the PERSONAL mark."""
    extra = getattr(field_info, "json_schema_extra", None)
    return isinstance(extra, dict) and extra.get("personal") is True


@lru_cache(maxsize=None)
def personal_paths(model: type[BaseModel]) -> tuple[tuple[str, ...], ...]:
    """The personal fields of an event model, as key paths into its payload.

    Marked top-level fields, then the model's own `personal_paths` (dotted, e.g. "state.content").
    """
    paths = [(name,) for name, info in model.model_fields.items() if is_personal(info)]
    paths += [tuple(path.split(".")) for path in getattr(model, "personal_paths", ())]
    return tuple(paths)


def erased(kind: str) -> Any:
    """What an erased value of this kind ("text" or "json") reads as: a fresh copy of the marker."""
    return ERASED if kind == "text" else dict(ERASED_OBJECT)
