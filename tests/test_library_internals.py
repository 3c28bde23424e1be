"""Each use of a library's internals (infrastructure/library_internals.py) still does what Chronicle needs.

These fail on a library upgrade that renames or changes what the adapter touches.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker
from eventsourcing.domain import DomainEvent
from eventsourcing.persistence import ListenNotifySubscription, Notification

from infrastructure.library_internals import (
    actor_message,
    event_wants_str_ids,
    fail_subscription,
    repick_prometheus_value_class,
    subscription_running,
    wake_subscription,
)


class _Recorder:
    """Just enough of an ApplicationRecorder: counts the subscription's pulls."""

    def __init__(self) -> None:
        self.pulls = 0

    def select_notifications(self, start: int, limit: int, stop: int | None = None,
                             topics: Sequence[str] = (), *, inclusive_of_start: bool = True) -> list[Notification]:
        self.pulls += 1
        return []


def _eventually(check: Any, seconds: float = 2.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.01)
    return check()


def test_subscription_state_wakes_stops_and_fails() -> None:
    recorder = _Recorder()
    subscription = ListenNotifySubscription(recorder=recorder)  # type: ignore[arg-type]
    with subscription:
        assert _eventually(lambda: recorder.pulls == 1)
        assert subscription_running(subscription)
        wake_subscription(subscription)
        assert _eventually(lambda: recorder.pulls == 2), "waking did not make the pull thread pull"
        error = RuntimeError("the LISTEN connection broke")
        fail_subscription(subscription, error)
        assert not subscription_running(subscription)
        with pytest.raises(RuntimeError) as raised:
            next(subscription)
        assert raised.value is error


def test_str_and_uuid_id_events_are_told_apart() -> None:
    class StrIdEvent:
        originator_id: str

    class UuidIdEvent:
        originator_id: uuid.UUID

    assert event_wants_str_ids(StrIdEvent)
    assert not event_wants_str_ids(UuidIdEvent)
    assert not event_wants_str_ids(DomainEvent)  # no id type the library can find: as before


def test_repicking_the_value_class_follows_the_multiprocess_directory(tmp_path: Path, monkeypatch) -> None:
    from prometheus_client import CollectorRegistry, Counter, values

    before = values.ValueClass
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    try:
        repick_prometheus_value_class()
        Counter("chronicle_internals_probe", "probe", registry=CollectorRegistry()).inc()
        assert list(tmp_path.glob("*.db")), "metrics did not go to the multiprocess directory"
    finally:
        monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR")
        os.environ.pop("prometheus_multiproc_dir", None)
        values.ValueClass = before


def test_a_built_message_is_the_one_the_actor_would_send() -> None:
    broker = StubBroker()

    def catch_up_partition(projection: str, partition: int, position: int | None = None,
                           partitions: int | None = None) -> None:
        pass

    actor = dramatiq.actor(catch_up_partition, broker=broker, queue_name="chronicle-projections")
    sent = actor.message("documents", 1, 10, 4)
    built = actor_message("chronicle-projections", "catch_up_partition", ("documents", 1, 10, 4))
    for field in ("queue_name", "actor_name", "args", "kwargs", "options"):
        assert getattr(built, field) == getattr(sent, field), field
    broker.enqueue(built)
    assert broker.queues["chronicle-projections"].qsize() == 1
