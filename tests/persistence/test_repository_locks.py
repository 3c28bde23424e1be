"""The repository's stream locks in a forked process: none is held there, whatever the parent held."""

from __future__ import annotations

import os
import threading

from service_layer.repository import WorkspaceRepository


def test_a_forked_process_can_take_a_stream_lock_held_at_the_fork():
    """A server forks its processes; a stripe another thread held then must not stay held in the child."""
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with WorkspaceRepository._stream_locks[7]:
            held.set()
            release.wait()

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait()
    try:
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            os._exit(0 if WorkspaceRepository._stream_locks[7].acquire(timeout=2) else 1)
        _, status = os.waitpid(pid, 0)
    finally:
        release.set()
        holder.join()
    assert os.waitstatus_to_exitcode(status) == 0
