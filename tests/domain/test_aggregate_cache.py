"""The aggregate cache changes no outcome: random command histories with the cache on and off.

Sequentially, the same history gives the same states and results either way. Concurrently,
processes with their own caches interleave histories on shared streams; every command that
succeeded is in the log exactly once, and a cache left stale by the other processes, a
cache-less load and a replay from events alone all agree on the final state.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from typing import Any
from uuid import UUID

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from domain import commands as c
from domain.aggregate import WorkspaceSnapshot
from domain.errors import DomainError
from service_layer.workspace import Workspace

CONTEXT = c.CommandContext(actor_id="cache-test", actor_type="service")
PROCESSES = 3

# One step of a history: an edit, an undo or a redo of a document.
steps = st.one_of(
    st.tuples(st.just("title"), st.text(alphabet="abcxyz", min_size=1, max_size=8)),
    st.tuples(st.just("content"), st.text(alphabet="abc ", max_size=12)),
    st.tuples(st.just("undo"), st.none()),
    st.tuples(st.just("redo"), st.none()),
)


def workspace(url: str, cache_size: int) -> Workspace:
    """A service on `url` with `cache_size` cached aggregates (0: no cache); snapshots every 3 events."""
    return Workspace({"PERSISTENCE_MODULE": "infrastructure.persistence", "DATABASE_URL": url,
                      "CHRONICLE_POOL_MIN_SIZE": "1", "CHRONICLE_POOL_MAX_SIZE": "2",
                      "CHRONICLE_AGGREGATE_CACHE_SIZE": str(cache_size)}, snapshot_interval=3)


def command_for(step: tuple[str, Any], document_id: UUID) -> c.Command:
    """The command a history step stands for, on `document_id`."""
    kind, value = step
    if kind == "undo":
        return c.Undo(stream_id=document_id)
    if kind == "redo":
        return c.Redo(stream_id=document_id)
    return c.UpdateDocument(document_id=document_id, **{kind: value})


def run(app: Workspace, history: list[tuple[str, Any]], document_id: UUID) -> list[Any]:
    """Each step's outcome: (version, events appended), or the refusal's code."""
    outcomes: list[Any] = []
    for step in history:
        try:
            result = app.handle(command_for(step, document_id), CONTEXT)
            outcomes.append((result.version, result.appended))
        except DomainError as exc:
            outcomes.append(exc.code)
    return outcomes


_apps: dict[tuple[str, int], Workspace] = {}


def run_in_process(url: str, cache_size: int, history: list[tuple[str, Any]], ids: list[str]) -> int:
    """In a pool process: run the history, step i on stream i mod len(ids); the events it appended."""
    app = _apps.get((url, cache_size))
    if app is None:
        app = _apps[url, cache_size] = workspace(url, cache_size)
    appended = 0
    for i, step in enumerate(history):
        try:
            appended += app.handle(command_for(step, UUID(ids[i % len(ids)])), CONTEXT).appended
        except DomainError:
            pass  # nothing to undo or redo just now: nothing appended
    return appended


def create(app: Workspace) -> UUID:
    result = app.handle(c.CreateDocument(namespace="cache", document_type="note", title="t", content=""), CONTEXT)
    return UUID(result.stream_id)


@pytest.fixture(scope="module")
def apps(domain_database_url: str) -> Any:
    cached, uncached = workspace(domain_database_url, 100), workspace(domain_database_url, 0)
    yield cached, uncached
    cached.close()
    uncached.close()


@pytest.fixture(scope="module")
def processes() -> Any:
    with ProcessPoolExecutor(PROCESSES, mp_context=multiprocessing.get_context("spawn")) as pool:
        yield pool


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(history=st.lists(steps, max_size=25))
def test_a_history_has_the_same_outcomes_with_and_without_the_cache(apps: Any, history: list[Any]) -> None:
    cached, uncached = apps
    on, off = create(cached), create(uncached)
    assert run(cached, history, on) == run(uncached, history, off)
    assert cached.get(on).state == uncached.get(off).state == cached.replay(on).state()
    assert cached.get(on).version == uncached.get(off).version
    # Snapshots taken of the saved aggregate hold what a replay of the events gives.
    for snapshot in cached.snapshots.get(on):
        replayed = cached.replay(on, snapshot.originator_version)
        assert snapshot.state == WorkspaceSnapshot.take(replayed).state


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(histories=st.lists(st.lists(steps, min_size=5, max_size=20), min_size=PROCESSES, max_size=PROCESSES),
       cache_sizes=st.lists(st.sampled_from([0, 100]), min_size=PROCESSES, max_size=PROCESSES))
def test_processes_writing_the_same_streams_lose_nothing_and_agree(
    apps: Any, processes: ProcessPoolExecutor, domain_database_url: str,
    histories: list[list[Any]], cache_sizes: list[int],
) -> None:
    cached, uncached = apps
    ids = [create(cached), create(cached)]
    for stream in ids:
        cached.get(stream)  # cached at version 1: stale once the processes have written
    futures = [processes.submit(run_in_process, domain_database_url, size, history, [str(i) for i in ids])
               for size, history in zip(cache_sizes, histories)]
    appended = sum(future.result(timeout=120) for future in futures)
    assert sum(uncached.get(stream).version for stream in ids) == len(ids) + appended
    for stream in ids:
        stale_then_fast_forwarded = cached.get(stream)
        assert stale_then_fast_forwarded.state == uncached.get(stream).state == cached.replay(stream).state()
        assert stale_then_fast_forwarded.version == uncached.get(stream).version
