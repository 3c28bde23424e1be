"""Each registered event type's stored fields, pinned: names, types and which are always stored.

Update events take their fields from field sets the commands share (domain.aggregate), so a field
added to a request body would otherwise change what the log stores without anyone deciding it.
A deliberate change regenerates the snapshot: `UPDATE_EVENT_FIELDS=1 pytest tests/domain/test_event_fields.py`,
and the diff of tests/domain/event_fields.json is reviewed with it (a new schema version, an upcaster?).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

SNAPSHOT = Path(__file__).with_name("event_fields.json")


def _kind(schema: dict[str, Any]) -> str:
    """A field's JSON Schema as a short type: `string`, `array[string]`, `Viewport`, `a | null`, ..."""
    if "$ref" in schema:
        return schema["$ref"].rsplit("/", 1)[-1]
    if "anyOf" in schema:
        kind = " | ".join(_kind(s) for s in schema["anyOf"])
        return f"personal({kind})" if schema.get("personal") else kind
    if "const" in schema:
        return json.dumps(schema["const"])
    if "enum" in schema:
        return " | ".join(json.dumps(v) for v in schema["enum"])
    kind = schema.get("type", "any")
    if kind == "array":
        return f"array[{_kind(schema.get('items', {}))}]"
    if kind == "object" and "additionalProperties" in schema and isinstance(schema["additionalProperties"], dict):
        return f"object[{_kind(schema['additionalProperties'])}]"
    return kind


def event_fields() -> dict[str, Any]:
    """Every registered type (the domain's and the operators'): its schema version, stream type, and
    stored fields with their types and whether every stored payload has them."""
    import domain.session  # noqa: F401 - registers document.accessed
    import service_layer.operator_events
    import service_layer.workspace  # noqa: F401 - registers the domain's types
    from domain.event_types import registry
    from infrastructure.eventsourcing_mapper import ENVELOPE

    pinned = {}
    for event_type in sorted(registry, key=lambda t: t.name):
        schema = event_type.stored_schema(ENVELOPE)
        pinned[event_type.name] = {
            "schema_version": event_type.schema_version, "stream_type": event_type.stream_type,
            "fields": {name: _kind(prop) for name, prop in sorted(schema["properties"].items())},
            "always_stored": sorted(schema["required"]),
        }
    return pinned


def test_each_event_types_stored_fields_are_pinned() -> None:
    current = event_fields()
    if os.environ.get("UPDATE_EVENT_FIELDS"):
        SNAPSHOT.write_text(json.dumps(current, indent=2, sort_keys=True) + "\n")
    pinned = json.loads(SNAPSHOT.read_text())
    changed = {name: {"pinned": pinned.get(name), "now": current.get(name)}
               for name in sorted(set(pinned) | set(current)) if pinned.get(name) != current.get(name)}
    assert not changed, ("stored event fields changed; if intended, regenerate tests/domain/event_fields.json"
                         f" (UPDATE_EVENT_FIELDS=1) and review its diff: {json.dumps(changed, indent=1)}")
