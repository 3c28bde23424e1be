"""The cyclic collector around projection batches: held off in a dedicated worker's batch, whose
survivors are then frozen out of its walks (cyclic garbage waits for a full collection once the
frozen generation has doubled); left on where the API shares the process (`chronicle up`); and
nothing for an idle poll."""

from __future__ import annotations

import gc
import uuid
import weakref
from collections.abc import Iterator

import dramatiq
import pytest

from infrastructure.event_store import NO_STREAM, NewEvent
from projections import engine
from projections.catalog import PROJECTORS
from projections.engine import catch_up_all

META = {"actor_id": "u", "actor_type": "user", "session_id": "s"}


@pytest.fixture
def collections(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple]]:
    """Every explicit gc.collect() and gc.freeze() call made meanwhile, as ("collect", *args) or
    ("freeze",) (the collector's own runs are not counted)."""
    calls: list[tuple] = []
    monkeypatch.setattr(gc, "collect", lambda *args: calls.append(("collect", *args)) or 0)
    monkeypatch.setattr(gc, "freeze", lambda: calls.append(("freeze",)))
    yield calls


def _agents(store, n: int) -> None:
    for _ in range(n):
        store.append(str(uuid.uuid4()), NO_STREAM, [NewEvent("agent.created", {
            "name": "a", "prompt": "p", "model": "m", "tools": [], "metadata": {}})], META)


def test_an_idle_poll_runs_no_collection(store, proj_pool, collections: list[tuple]) -> None:
    _agents(store, 3)
    catch_up_all(proj_pool, PROJECTORS["agents"])
    collections.clear()
    for _ in range(20):  # nothing new: each run reads an empty batch
        assert catch_up_all(proj_pool, PROJECTORS["agents"]).processed == 0
    assert collections == []


def test_a_batch_that_did_work_moves_what_it_left_alive_out_of_the_collectors_walks(
        store, proj_pool, collections: list[tuple], monkeypatch) -> None:
    monkeypatch.setitem(engine._frozen, "after_full", 10**12)  # no full collection due
    counted: list[bool] = []
    monkeypatch.setattr(gc, "get_freeze_count", lambda: counted.append(True) or 0)
    _agents(store, 200)
    assert catch_up_all(proj_pool, PROJECTORS["agents"]).processed == 200
    assert ("freeze",) in collections
    assert not [c for c in collections if c[0] == "collect"]
    assert counted == []  # far below the limit, the frozen set is not walked to count it


def test_cyclic_garbage_is_collected_once_the_frozen_generation_has_doubled(store, proj_pool, monkeypatch) -> None:
    class Node:
        pass

    monkeypatch.setattr(engine, "FULL_COLLECTION_FLOOR", 0)
    monkeypatch.setitem(engine._frozen, "after_full", 0)  # the frozen generation has doubled since
    _agents(store, 200)
    gc.disable()  # nothing collects the cycle before the run does
    try:
        cycle = Node()
        cycle.me = cycle
        gone = weakref.ref(cycle)
        del cycle  # garbage only the cyclic collector can free
        assert catch_up_all(proj_pool, PROJECTORS["agents"]).processed == 200
        assert gone() is None
    finally:
        gc.enable()


def test_where_the_api_shares_the_process_the_collector_stays_on(store, proj_pool, monkeypatch) -> None:
    monkeypatch.setitem(engine._paused, "allowed", True)  # put back afterwards
    started: list[bool] = []

    class Worker:  # dramatiq's, not started: only the wiring of `chronicle up` is under test
        def __init__(self, *args, **kwargs) -> None: ...
        def start(self) -> None: started.append(True)
        def stop(self, timeout: int) -> None: ...

    from workers import actors

    monkeypatch.setattr(dramatiq, "Worker", Worker)
    monkeypatch.setattr(actors, "wake_all", lambda: None)
    monkeypatch.setattr(actors, "wake_jobs", lambda: None)
    from workers.inprocess import start_in_process_workers

    start_in_process_workers(1)
    assert started
    seen: list[bool] = []
    original = PROJECTORS["agents"].handlers["agent.created"]

    def watching(s, e, out):
        seen.append(gc.isenabled())
        original(s, e, out)

    monkeypatch.setitem(PROJECTORS["agents"].handlers, "agent.created", watching)
    _agents(store, 3)
    catch_up_all(proj_pool, PROJECTORS["agents"])
    assert seen and all(seen), "a batch held the collector off in a process that serves requests"
