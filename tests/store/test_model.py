"""A hypothesis stateful test: append, read_stream and read_all against an in-memory model."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from infrastructure.errors import ConcurrencyConflict, EventIdReused
from infrastructure.event_store import (
    ANY,
    NO_STREAM,
    AppendResult,
    EventStore,
    NewEvent,
)

from .conftest import note_registry

STREAMS = ["a", "b", "c"]
texts = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\x00"), max_size=20)
new_events = st.lists(st.builds(lambda t, n: NewEvent("note.written", {"text": t, "n": n}), texts, st.integers(0, 9)),
                      min_size=1, max_size=3)


class StoreModel(RuleBasedStateMachine):
    """Streams as lists of events, the log as one list in append order (one writer)."""

    store: EventStore

    @initialize()
    def start(self) -> None:
        # Each run gets its own log and stream names, so runs sharing a database never meet.
        self.run = uuid.uuid4().hex[:8]
        self.log = f"model-{self.run}"
        self.streams: dict[str, list[NewEvent]] = {s: [] for s in STREAMS}
        self.log_events: list[tuple[str, NewEvent]] = []
        self.appends: list[tuple[str, object, list[NewEvent], AppendResult]] = []

    def sid(self, name: str) -> str:
        return f"note-{self.run}-{name}"

    def _append(self, name: str, expected: object, events: list[NewEvent]) -> None:
        current = len(self.streams[name])
        ok = expected is ANY or (expected is NO_STREAM and current == 0) or expected == current
        if ok:
            result = self.store.append(self.sid(name), expected, events, log_name=self.log)
            assert not result.duplicate
            assert result.version == current + len(events)
            assert result.first_version == current + 1
            assert list(result.positions) == sorted(result.positions)
            self.streams[name].extend(events)
            self.log_events.extend((name, e) for e in events)
            self.appends.append((name, expected, events, result))
        else:
            with pytest.raises(ConcurrencyConflict) as caught:
                self.store.append(self.sid(name), expected, events, log_name=self.log)
            assert caught.value.actual == current
            assert caught.value.expected == (expected.value if expected is NO_STREAM else expected)

    @rule(name=st.sampled_from(STREAMS), events=new_events)
    def append_at_current_version(self, name: str, events: list[NewEvent]) -> None:
        self._append(name, len(self.streams[name]), events)

    @rule(name=st.sampled_from(STREAMS), events=new_events)
    def append_no_stream(self, name: str, events: list[NewEvent]) -> None:
        self._append(name, NO_STREAM, events)

    @rule(name=st.sampled_from(STREAMS), events=new_events)
    def append_any(self, name: str, events: list[NewEvent]) -> None:
        self._append(name, ANY, events)

    @rule(name=st.sampled_from(STREAMS), events=new_events, offset=st.integers(-3, 3).filter(bool))
    def append_at_wrong_version(self, name: str, events: list[NewEvent], offset: int) -> None:
        self._append(name, max(0, len(self.streams[name]) + offset), events)

    @precondition(lambda self: self.appends)
    @rule(data=st.data())
    def retry_an_append(self, data: st.DataObject) -> None:
        name, expected, events, original = data.draw(st.sampled_from(self.appends))
        retried = self.store.append(self.sid(name), expected, events, log_name=self.log)
        assert retried.duplicate
        assert (retried.version, retried.positions) == (original.version, original.positions)

    @precondition(lambda self: self.appends)
    @rule(data=st.data(), text=texts)
    def reuse_an_event_id(self, data: st.DataObject, text: str) -> None:
        name, _, events, _ = data.draw(st.sampled_from(self.appends))
        old = data.draw(st.sampled_from(events))
        changed = NewEvent("note.written", {"text": text + "!", "n": 0}, event_id=old.event_id)
        with pytest.raises(EventIdReused):
            self.store.append(self.sid(name), ANY, [changed], log_name=self.log)

    @rule(after=st.integers(0, 12), limit=st.integers(1, 5))
    def read_a_page(self, after: int, limit: int) -> None:
        everything = self.store.read_all(0, 10_000, log_name=self.log)
        checkpoint = everything[after - 1].position if 0 < after <= len(everything) else 0
        page = self.store.read_all(checkpoint, limit, log_name=self.log)
        expected = [e for e in everything if e.position > checkpoint][:limit]
        assert [e.position for e in page] == [e.position for e in expected]

    @rule(name=st.sampled_from(STREAMS), start=st.integers(1, 6), span=st.integers(0, 6))
    def read_a_range(self, name: str, start: int, span: int) -> None:
        got = self.store.read_stream(self.sid(name), start, start + span)
        want = self.streams[name][start - 1 : start + span]
        assert [e.event_id for e in got] == [e.event_id for e in want]
        assert [e.version for e in got] == list(range(start, start + len(want)))

    @invariant()
    def streams_match(self) -> None:
        for name, events in self.streams.items():
            got = self.store.read_stream(self.sid(name))
            assert [(e.event_id, e.payload) for e in got] == [(e.event_id, dict(e.payload)) for e in events]
            assert [e.version for e in got] == list(range(1, len(events) + 1))
            assert self.store.stream_version(self.sid(name)) == len(events)

    @invariant()
    def log_matches(self) -> None:
        got = self.store.read_all(0, 10_000, log_name=self.log)
        assert [e.event_id for e in got] == [e.event_id for _, e in self.log_events]
        assert [e.stream_id for e in got] == [self.sid(name) for name, _ in self.log_events]
        positions = [e.position for e in got]
        assert positions == sorted(set(positions))


def test_store_matches_model(pool, settings):
    """Random appends (numbered, no-stream, any, wrong, retried, reused ids) and reads agree with the model."""
    store = EventStore(pool, note_registry(), settings)
    StoreModel.store = store
    run_state_machine_as_test(
        StoreModel,
        settings=hypothesis_settings(
            max_examples=30, stateful_step_count=15, deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
        ),
    )
