"""The suite's own guarantee: a process a test starts does not outlive it, even when the test fails.

A server's children (worker processes) share its process group, so stopping stops the group.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.reliability.conftest import Process, stopped_afterwards


def _with_a_child(tmp_path: Path) -> Process:
    """A shell that leaves a child of its own running in its group, as `chronicle worker` does."""
    process = Process(["sh", "-c", "sleep 300 & sleep 300; wait"], dict(os.environ), tmp_path / "sh.log").start()
    deadline = time.monotonic() + 10
    while len(process.group_left) < 2:
        assert time.monotonic() < deadline, "the child did not start"
        time.sleep(0.02)
    return process


def test_stopping_a_process_stops_its_whole_group(tmp_path: Path) -> None:
    process = _with_a_child(tmp_path)
    process.stop(5)
    assert not process.alive and process.group_left == []


def test_a_process_left_running_by_a_failing_test_is_stopped(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="the test failed"):
        with stopped_afterwards():
            process = _with_a_child(tmp_path)
            raise RuntimeError("the test failed")
    assert not process.alive and process.group_left == []
