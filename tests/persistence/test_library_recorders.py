"""The eventsourcing library's own recorder and factory test cases, run on Chronicle's store.

Where a library test asserts something Chronicle deliberately does differently, the test
is overridden here with the reason in a comment.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from eventsourcing.cipher import AESCipher
from eventsourcing.compressor import ZlibCompressor
from eventsourcing.persistence import InfrastructureFactory, StoredEvent, Tracking
from eventsourcing.tests.persistence import (
    AggregateRecorderTestCase,
    ApplicationRecorderTestCase,
    InfrastructureFactoryTestCase,
    ProcessRecorderTestCase,
    TrackingRecorderTestCase,
)
from eventsourcing.utils import Environment, get_topic
from infrastructure.persistence import (
    ChronicleApplicationRecorder,
    ChronicleFactory,
    ChronicleProcessRecorder,
    ChronicleSnapshotRecorder,
    ChronicleTrackingRecorder,
    UnreadablePayloadSettings,
)
from tests.support import foreign_locks_on_the_next_position


class _OnFreshDatabase:
    """Builds recorders from a factory on this test's own database, closed after the test."""

    factories: list[ChronicleFactory]

    @pytest.fixture(autouse=True)
    def _environment(self, es_env: dict[str, str]):
        self.es_env = es_env
        self.env = Environment("TestApp", dict(es_env))
        self.factories = []
        yield
        for factory in self.factories:
            factory.close()

    def factory(self) -> ChronicleFactory:
        factory = InfrastructureFactory.construct(Environment("TestApp", dict(self.es_env)))
        assert isinstance(factory, ChronicleFactory)
        self.factories.append(factory)
        return factory


class TestSnapshotRecorder(_OnFreshDatabase, AggregateRecorderTestCase):
    def create_recorder(self) -> ChronicleSnapshotRecorder:
        return self.factory().aggregate_recorder("snapshots")


class TestApplicationRecorder(_OnFreshDatabase, ApplicationRecorderTestCase):
    # Notification ids are global positions: increasing, but an aborted append leaves a
    # hole. The single-writer tests below still see 1, 2, 3 on a fresh database.
    EXPECT_CONTIGUOUS_NOTIFICATION_IDS = False

    def create_recorder(self) -> ChronicleApplicationRecorder:
        return self.factory().application_recorder()

    def test_insert_subscribe(self) -> None:
        self.optional_test_insert_subscribe()

    # Overridden: the library's concurrency tests write streams from version 0, and
    # Chronicle's streams start at version 1 with no holes (events.version >= 1). They
    # also write 10,000-100,000 events, too slow for this suite; test_application.py has
    # a concurrent-writers test of its own.
    def test_concurrent_no_conflicts(self, initial_position: int = 0) -> None:
        pytest.skip("streams start at version 1 in Chronicle; see test_application.py")

    def test_concurrent_throughput(self) -> None:
        pytest.skip("streams start at version 1 in Chronicle; see bench/append.py")

    def test_version_zero_is_refused(self) -> None:
        from eventsourcing.persistence import DataError

        recorder = self.create_recorder()
        with pytest.raises(DataError, match="start at version 1"):
            recorder.insert_events([StoredEvent(self.new_originator_id(), 0, "topic", b"{}")])

    def test_foreign_locks_on_the_next_key_neither_block_nor_hide_a_save(self) -> None:
        """The library's path appends with the store's statement: no foreign lock stops it."""
        recorder = self.create_recorder()
        with foreign_locks_on_the_next_position(self.es_env["DATABASE_URL"]) as nxt:
            started = time.monotonic()
            # Two aggregates: two appends in one transaction, the second's key past the first's.
            ids = recorder.insert_events([StoredEvent(self.new_originator_id(), 1, "topic1", b"state1"),
                                          StoredEvent(self.new_originator_id(), 1, "topic2", b"state2")])
            assert time.monotonic() - started < 5
            assert ids is not None and nxt <= ids[0] < ids[1]
            assert [n.id for n in recorder.select_notifications(nxt, 10)] == ids
            assert recorder.max_notification_id() == ids[1]


class TestTrackingRecorder(_OnFreshDatabase, TrackingRecorderTestCase):
    def create_recorder(self) -> ChronicleTrackingRecorder:
        return self.factory().tracking_recorder()


class TestProcessRecorder(_OnFreshDatabase, ProcessRecorderTestCase):
    def create_recorder(self) -> ChronicleProcessRecorder:
        return self.factory().process_recorder()

    # Overridden: the library's version writes each stream at version 0; Chronicle's
    # streams start at 1. Same measurement otherwise.
    def test_performance(self) -> None:
        recorder = self.create_recorder()
        for n in range(1, 51):
            recorder.insert_events(
                [StoredEvent(self.new_originator_id(), 1, "topic1", b"state1")],
                tracking=Tracking("upstream_app", n),
            )
        assert recorder.max_tracking_id("upstream_app") == 50


class MyTrackingRecorder(ChronicleTrackingRecorder):
    pass


def _answers(cls: type[Any]) -> Callable[[Any], type[Any]]:
    """A hook of the library's factory test case that answers `cls`: which class it should find."""
    return lambda self: cls


class TestFactory(_OnFreshDatabase, InfrastructureFactoryTestCase[ChronicleFactory]):
    # The library's hooks: the class of Chronicle's that the factory should build for each part.
    expected_factory_class = _answers(ChronicleFactory)
    expected_aggregate_recorder_class = _answers(ChronicleSnapshotRecorder)
    expected_application_recorder_class = _answers(ChronicleApplicationRecorder)
    expected_tracking_recorder_class = _answers(ChronicleTrackingRecorder)
    tracking_recorder_subclass = _answers(MyTrackingRecorder)
    expected_process_recorder_class = _answers(ChronicleProcessRecorder)

    # Overridden: Chronicle stores payloads as readable jsonb for auditors, so a cipher
    # or a compressor (which turn payloads into opaque bytes) is refused, clearly.
    def _assert_mapper_refused(self, reason: str, **settings: str) -> None:
        """With these settings the factory refuses to build a mapper, saying why."""
        self.env.update(settings)
        with pytest.raises(UnreadablePayloadSettings, match=reason):
            self.factory.mapper(transcoder=self.transcoder)

    def test_mapper_with_compressor(self) -> None:
        self._assert_mapper_refused("a compressor cannot be used",
                                    **{self.factory.COMPRESSOR_TOPIC: get_topic(ZlibCompressor)})

    def test_mapper_with_cipher(self) -> None:
        self._assert_mapper_refused("a cipher cannot be used", **{AESCipher.CIPHER_KEY: AESCipher.create_key(16)})

    def test_mapper_with_cipher_and_compressor(self) -> None:
        self._assert_mapper_refused("a cipher and a compressor", **{
            self.factory.COMPRESSOR_TOPIC: get_topic(ZlibCompressor), self.factory.CIPHER_TOPIC: get_topic(AESCipher),
            AESCipher.CIPHER_KEY: AESCipher.create_key(16),
        })

    def test_mapper_with_wrong_cipher_key(self) -> None:
        pytest.skip("ciphers are refused (test_mapper_with_cipher)")

    def test_needs_database_url(self) -> None:
        env = Environment("TestApp", {"PERSISTENCE_MODULE": "infrastructure.persistence"})
        with pytest.MonkeyPatch.context() as mp:
            mp.delenv("DATABASE_URL", raising=False)
            with pytest.raises(OSError, match="DATABASE_URL"):
                InfrastructureFactory.construct(env)
