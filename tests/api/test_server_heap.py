"""A server process settles its heap once started: startup objects frozen, young collections rarer."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from api.app import GC_YOUNG_THRESHOLD, settle_heap


@pytest.fixture
def collector() -> Iterator[None]:
    """The test process's collector as it was, afterwards."""
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


def test_settle_heap_freezes_startup_and_raises_the_young_threshold(collector: None) -> None:
    gc.unfreeze()
    older = gc.get_threshold()[1:]
    built_at_startup = [[i] for i in range(1000)]  # containers: the collector tracks them
    settle_heap()
    assert gc.get_freeze_count() > len(built_at_startup)
    assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, *older)  # the older generations keep theirs
