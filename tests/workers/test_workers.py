"""Workers: wake-ups lost and duplicated, racing workers, SIGKILL, Redis down."""

from __future__ import annotations

import random
import threading
import time

import pytest
from dramatiq.brokers.stub import StubBroker

from infrastructure.event_store import EventStore
from projections.catalog import PROJECTORS, projectors_for
from projections.engine import catch_up, forget_checkpoints
from projections.partitioning import partition_of
from projections.rebuild import rebuild_all
from projections.status import status
from tests.projections import faults
from tests.projections.conftest import REGISTRY, dump_tables, project_all
from tests.projections.history import History, append_history
from tests.workers.conftest import SHARED_REDIS, WorkerProcess, wait_caught_up
from workers.wakeups import install_wakeups, redis_sender


def _full_rebuild_equals_live(pool) -> None:
    live = dump_tables(pool)
    rebuild_all(pool)
    rebuilt = dump_tables(pool)
    assert rebuilt == live, _differences(live, rebuilt)


def _differences(live: dict[str, list], rebuilt: dict[str, list]) -> str:
    """Where the live and the rebuilt tables part, row by row, field path by field path (pytest
    cuts a diff of nested rows short, and a failure after random kills is hard to repeat)."""
    def paths(a, b, at: str) -> list[str]:
        if isinstance(a, dict) and isinstance(b, dict):
            return [p for k in sorted(a.keys() | b.keys()) for p in paths(a.get(k), b.get(k), f"{at}.{k}")]
        if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
            return [p for i, (x, y) in enumerate(zip(a, b)) for p in paths(x, y, f"{at}[{i}]")]
        return [] if a == b else [f"{at}: live {a!r} rebuilt {b!r}"]

    lines = []
    for table in live:
        if live[table] != rebuilt[table]:
            lines.append(f"{table}: {len(live[table])} live rows, {len(rebuilt[table])} rebuilt")
            lines += paths(live[table], rebuilt[table], table)[:20]
    return "\n".join(lines)


def _at_head(pool) -> bool:
    """No partition of any projection has an event left to apply."""
    return all(p.lag_events == 0 for p in status(pool))


def test_wakeups_duplicated_and_reordered_apply_every_event_once(store, proj_pool):
    """Every wake-up delivered twice, shuffled, and no tick: every partition reaches the head, the
    rows equal a rebuild, and no effect is applied twice."""
    faults.install(proj_pool)
    sent: list[tuple[str, int, int]] = []
    install_wakeups(store, partitions=4, send=lambda *m: sent.append(m), window=0)  # one per append
    append_history(store, History(1), [(i, i, i) for i in range(80)])
    assert len(sent) == 80 and all(PROJECTORS[m[0]] for m in sent)
    assert {m[0] for m in sent} == {"chains", "documents", "agents"}  # one projection per append
    delivered = sent * 2
    random.shuffle(delivered)
    for projection, partition, position, partitions in delivered:
        catch_up(proj_pool, PROJECTORS[projection], partition, partitions=4, target=position, assumed=partitions)
    assert _at_head(proj_pool)
    assert faults.applied_twice(proj_pool) == []
    _full_rebuild_equals_live(proj_pool)


def test_a_lost_wakeup_shows_as_lag_until_the_tick(store, proj_pool):
    """The last wake-up of a partition is lost: with no tick, its events wait (the loss is visible
    in status); the tick's catch-up then brings every partition to the head."""
    lose = threading.Event()
    lost: list[tuple] = []

    def deliver(projection, partition, position, partitions):
        if lose.is_set():
            lost.append((projection, partition))
            return
        catch_up(proj_pool, PROJECTORS[projection], partition, partitions=4, target=position, assumed=partitions)

    install_wakeups(store, partitions=4, send=deliver, window=0)
    history = History(4)
    append_history(store, history, [(i, i, i) for i in range(40)])
    assert _at_head(proj_pool)
    lose.set()
    append_history(store, history, [(3, 3, 3)])
    behind = [(p.projection, p.partition) for p in status(proj_pool) if p.lag_events]
    assert behind == lost and len(lost) == 1
    project_all(proj_pool)  # the tick
    assert _at_head(proj_pool)
    _full_rebuild_equals_live(proj_pool)


def test_coalesced_wakeups_cover_every_append(store, proj_pool):
    """Within a window a partition gets one message now and one trailing, naming the highest position."""
    sent: list[tuple] = []
    hook = install_wakeups(store, partitions=4, send=lambda *m: sent.append(m), window=0.5)
    positions: dict[tuple[str, int], int] = {}

    def note(result) -> None:
        for projector in projectors_for(result.stream_type):
            key = (projector.name, partition_of(result.stream_id, 4))
            positions[key] = max(positions.get(key, 0), result.position)

    store.after_append.append(note)
    append_history(store, History(3), [(i, i, i) for i in range(60)])
    assert len(sent) < 60  # coalesced: the window is far longer than the appends take
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(
            max((m[2] for m in sent if (m[0], m[1]) == key), default=0) < position
            for key, position in positions.items()):
        time.sleep(0.05)
    hook.flush()
    for key, position in positions.items():  # the last append of every partition was woken for
        assert max(m[2] for m in sent if (m[0], m[1]) == key) == position
    for projection, partition, position, partitions in sent:
        catch_up(proj_pool, PROJECTORS[projection], partition, partitions=4, target=position, assumed=partitions)
    _full_rebuild_equals_live(proj_pool)


def test_wakeup_messages_through_a_stub_broker(store, proj_pool):
    """Message handling alone: a failing send never fails the append."""
    broker = StubBroker()

    def send(*_):
        raise ConnectionError("redis is down")

    hook = install_wakeups(store, partitions=4, send=send, window=0)
    append_history(store, History(2), [(0, 0, 1), (1, 1, 2)])
    assert hook.failures == 2
    broker.close()


def test_two_workers_race_for_one_partition(store, proj_pool):
    history = History(5)
    stop = threading.Event()
    errors: list[Exception] = []

    def worker():
        try:
            while not stop.is_set():
                for projector in PROJECTORS.values():
                    catch_up(proj_pool, projector, 0, partitions=1, batch_size=3)
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    append_history(store, history, [(i, i * 7, i) for i in range(150)])
    time.sleep(0.5)
    stop.set()
    for t in threads:
        t.join()
    assert not errors
    forget_checkpoints()
    for projector in PROJECTORS.values():
        catch_up(proj_pool, projector, 0, partitions=1)
    _full_rebuild_equals_live(proj_pool)


def test_workers_racing_for_one_partition_apply_each_event_once(store, proj_pool):
    """Each batch's commit frees the partition's lock to a worker already trying for it: that worker
    must read the checkpoint the commit wrote, never the one before it (an effect applied twice)."""
    faults.install(proj_pool)
    stop = threading.Event()
    errors: list[Exception] = []

    def worker() -> None:
        try:
            while not stop.is_set():
                for projector in PROJECTORS.values():
                    catch_up(proj_pool, projector, 0, partitions=1, batch_size=1)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    append_history(store, History(17), [(i % 40, i % 7, i) for i in range(300)])
    time.sleep(1.0)
    stop.set()
    for t in threads:
        t.join()
    assert not errors
    assert faults.applied_twice(proj_pool) == []


def test_worker_sigkilled_at_random_points(proj_pool, fresh_database_url, settings, namespace):
    store = EventStore(proj_pool, REGISTRY, settings)
    worker = WorkerProcess(fresh_database_url, SHARED_REDIS, namespace)
    from infrastructure.broker import make_broker
    from infrastructure.config import Settings

    broker = make_broker(Settings(redis_url=SHARED_REDIS), namespace=namespace)
    install_wakeups(store, partitions=4, send=redis_sender(broker))
    history = History(11)
    faults.install(proj_pool)
    worker.start()
    try:
        for _ in range(3):
            append_history(store, history, [(random.randrange(99), random.randrange(99), i) for i in range(120)])
            time.sleep(random.uniform(0.5, 2.0))
            worker.kill()
            worker.start()
        wait_caught_up(proj_pool)  # the restarted worker's boot covers what the killed one held
        append_history(store, history, [(i, i, i) for i in range(30)])
        wait_caught_up(proj_pool)  # and wake-ups reach it again (the killed worker's marks are gone)
    finally:
        worker.stop()
        broker.close()
    assert faults.applied_twice(proj_pool) == []
    _full_rebuild_equals_live(proj_pool)


def test_a_booting_worker_drops_stale_marks_and_catches_every_partition_up(
        proj_pool, fresh_database_url, settings, namespace):
    """A killed worker's prefetched messages stay in Redis for a minute or more, and their pending
    marks suppress the wake-ups of appends meanwhile. A booting worker (tick off) covers them.

    The marks are set by hand and never expire here, so the test does not race their TTL."""
    from infrastructure.broker import make_broker
    from infrastructure.config import Settings
    from workers.wakeups import _pending_key

    broker = make_broker(Settings(redis_url=SHARED_REDIS), namespace=namespace)
    store = EventStore(proj_pool, REGISTRY, settings)
    install_wakeups(store, partitions=4, send=redis_sender(broker), window=0)
    worker = WorkerProcess(fresh_database_url, SHARED_REDIS, namespace)
    history = History(17)
    try:
        for projection in PROJECTORS:
            for partition in range(4):
                broker.client.set(_pending_key(broker, projection, partition, 4), 1)
        append_history(store, history, [(i, i * 5, i) for i in range(40)])
        assert broker.client.hlen(f"{namespace}:chronicle-projections.msgs") == 0  # all suppressed
        assert not any(dump_tables(proj_pool).values())  # nothing projected yet
        worker.start()
        wait_caught_up(proj_pool)
        assert list(broker.client.scan_iter(f"{namespace}:wakeup-pending:*")) == []
        append_history(store, history, [(i, i, i) for i in range(20)])  # sent again, and taken
        wait_caught_up(proj_pool)
    finally:
        worker.stop()
        broker.close()
    _full_rebuild_equals_live(proj_pool)


@pytest.mark.soak
def test_redis_down_during_appends(proj_pool, fresh_database_url, settings, namespace, private_redis):
    store = EventStore(proj_pool, REGISTRY, settings)
    from infrastructure.broker import make_broker
    from infrastructure.config import Settings

    broker = make_broker(Settings(redis_url=private_redis["url"]), namespace=namespace)
    hook = install_wakeups(store, partitions=4, send=redis_sender(broker), window=0)
    worker = WorkerProcess(fresh_database_url, private_redis["url"], namespace, tick="0.5")  # the tick recovers what Redis lost
    history = History(13)
    worker.start()
    try:
        append_history(store, history, [(i, i, i) for i in range(40)])
        wait_caught_up(proj_pool)
        private_redis["stop"]()
        n = append_history(store, history, [(i, i * 3, i) for i in range(60)])  # appends still succeed
        assert hook.failures == n
        private_redis["start"]()
        wait_caught_up(proj_pool, timeout=60)
    finally:
        worker.stop()
        broker.close()
    _full_rebuild_equals_live(proj_pool)


def test_a_pending_wakeup_covers_later_appends_until_a_worker_takes_it(namespace):
    """Real Redis: one message waits per partition, naming the highest position; taking it reopens."""
    from infrastructure.broker import make_broker
    from infrastructure.config import Settings
    from workers.wakeups import PENDING_TTL_MS, enqueue_wakeup, take_pending

    broker = make_broker(Settings(redis_url=SHARED_REDIS), namespace=namespace)
    queued = f"{namespace}:chronicle-projections.msgs"
    try:
        assert enqueue_wakeup(broker, "documents", 1, 10, 4)
        assert not enqueue_wakeup(broker, "documents", 1, 30, 4)  # covered by the waiting message
        assert not enqueue_wakeup(broker, "documents", 1, 20, 4)  # a lower position never lowers it
        assert enqueue_wakeup(broker, "documents", 2, 11, 4)  # another partition has its own
        assert enqueue_wakeup(broker, "documents", 1, 12, 8)  # so has a partition of another count
        assert broker.client.hlen(queued) == 3
        key = next(iter(broker.client.scan_iter(f"{namespace}:wakeup-pending:documents:1:4")))
        assert 0 < broker.client.pttl(key) <= PENDING_TTL_MS  # a lost message frees the partition

        assert take_pending(broker, "documents", 1, 4) == 30  # the worker starting on it
        assert take_pending(broker, "documents", 1, 4) is None
        assert take_pending(broker, "documents", 1, None) is None  # a message with no count (replay)
        assert enqueue_wakeup(broker, "documents", 1, 40, 4)  # appends after that send again
        assert broker.client.hlen(queued) == 4
    finally:
        broker.close()


def test_the_api_sends_coalescing_wakeups_when_it_stops():
    """Our own logic, with a stand-in service: shutdown flushes the trailing wake-ups bootstrap installed."""
    from types import SimpleNamespace

    from service_layer.bootstrap import Wired, shutdown
    from workers.wakeups import WakeUps

    sent: list[tuple] = []
    wakeups = WakeUps(4, send=lambda *m: sent.append(m), window=60)
    wakeups.wake("documents", 1, 10, 4)  # sent at once
    wakeups.wake("documents", 1, 12, 4)  # folded into a trailing message, due in a minute
    assert sent == [("documents", 1, 10, 4)]
    shutdown(Wired(SimpleNamespace(close=lambda: None), wakeups=[wakeups]))
    assert sent == [("documents", 1, 10, 4), ("documents", 1, 12, 4)]
