"""Copies of aggregate values that share nothing mutable, made without copy.deepcopy's generic walk.

An aggregate's values are JSON-shaped (dicts, lists, text, numbers) or immutable (ids, timestamps).
copy.deepcopy looks each value up in a memo and dispatches on its type through several calls;
commands copy the cached aggregate they decide on, so that walk was a visible part of a command.

Unlike copy.deepcopy it keeps no memo: a dict or list met twice is copied twice, and a cycle
never ends. It is a deepcopy only because an aggregate's state holds neither: every value an
event or an undo assigns is copied on the way in (WorkspaceEvent.values, set_state), so no two
places share one, and JSON has no cycles (tests/domain/test_copies.py pins it for each type).
"""

from __future__ import annotations

import copy
from datetime import datetime
from typing import Any
from uuid import UUID

# Values a copy can share with the original.
IMMUTABLE = frozenset({str, int, float, bool, bytes, UUID, datetime, type(None)})


def copy_value(value: Any) -> Any:
    """A copy of `value` sharing no dict or list with it; immutable values are shared.

    Anything neither JSON-shaped nor immutable is left to copy.deepcopy.
    """
    kind = type(value)
    if kind in IMMUTABLE:
        return value
    if kind is dict:
        return {key: copy_value(item) for key, item in value.items()}
    if kind is list:
        return [copy_value(item) for item in value]
    return copy.deepcopy(value)
