"""What changed between two states of a stream, field by field.

Object-valued fields (metadata, nodes, edges, tags, canvas state...) are compared key by key,
so a diff names `nodes.n1` or `tags.production` rather than the whole object.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

MISSING: Any = None


@dataclass(frozen=True)
class FieldChange:
    """One field that differs: its path, how it changed, and its value before and after.

    `change` is "added", "removed" or "changed"; a missing value is None.
    """

    field: str
    change: Literal["added", "removed", "changed"]
    before: Any
    after: Any


def diff_states(before: dict[str, Any], after: dict[str, Any]) -> list[FieldChange]:
    """The fields that differ between two states, in field-name order.

    Object-valued fields on both sides are compared one key deeper.
    """
    changes: list[FieldChange] = []
    for name in sorted(set(before) | set(after)):
        old, new = before.get(name, MISSING), after.get(name, MISSING)
        if old == new and (name in before) == (name in after):
            continue
        if isinstance(old, dict) and isinstance(new, dict):
            changes.extend(_diff_keys(name, old, new))
        else:
            changes.append(FieldChange(name, _kind(name in before, name in after), old, new))
    return changes


def _diff_keys(prefix: str, before: dict[str, Any], after: dict[str, Any]) -> list[FieldChange]:
    changes = []
    for key in sorted(set(before) | set(after)):
        old, new = before.get(key, MISSING), after.get(key, MISSING)
        if key in before and key in after and old == new:
            continue
        changes.append(FieldChange(f"{prefix}.{key}", _kind(key in before, key in after), old, new))
    return changes


def _kind(in_before: bool, in_after: bool) -> Literal["added", "removed", "changed"]:
    if not in_before:
        return "added"
    if not in_after:
        return "removed"
    return "changed"
