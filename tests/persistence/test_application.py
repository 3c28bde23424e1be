"""Applications of our own on Chronicle's persistence module, against real PostgreSQL.

Save and load at a version, snapshots, a projection with tracking, two applications in
one database, save() keyword arguments in metadata, find_command, jsonb payloads, typed
pydantic events with upcasting, one transaction per save, and gap-free subscriptions.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import singledispatchmethod
from typing import Any
from uuid import uuid4

import psycopg
import pytest
from eventsourcing.application import AggregateNotFoundError
from eventsourcing.domain import DomainEventProtocol
from eventsourcing.persistence import IntegrityError, StoredEvent, Tracking
from eventsourcing.projection import Projection, ProjectionRunner
from eventsourcing.utils import get_topic

from infrastructure.errors import InvalidAppend, InvalidEventPayload
from infrastructure.event_store import NewEvent
from tests.conftest import as_owner
from infrastructure.eventsourcing_mapper import payload_from_state, state_from_payload
from infrastructure.persistence import (
    ChronicleApplicationRecorder,
    ChronicleTrackingRecorder,
    CommandEvent,
    UnreadablePayloadSettings,
)
from tests.persistence.models import Dog, DogSchool, Note, Notebook, OtherSchool
from tests.support import run_threads


@pytest.fixture
def school(es_env: dict[str, str]) -> Iterator[DogSchool]:
    app = DogSchool()
    yield app
    app.close()


@pytest.fixture
def notebook(es_env: dict[str, str]) -> Iterator[Notebook]:
    app = Notebook()
    yield app
    app.close()


def rows(url: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql, params).fetchall()


def test_save_load_at_version_and_snapshots(school: DogSchool, es_env: dict[str, str]) -> None:
    dog_id = school.register_dog("Fido")
    for trick in ("roll", "sit", "beg"):
        school.add_trick(dog_id, trick)

    dog = school.repository.get(dog_id)
    assert (dog.name, dog.tricks, dog.version) == ("Fido", ["roll", "sit", "beg"], 4)
    assert school.repository.get(dog_id, version=1).tricks == []
    assert school.repository.get(dog_id, version=3).tricks == ["roll", "sit"]

    # snapshotting_intervals = {Dog: 2}: snapshots at versions 2 and 4, as jsonb state.
    snaps = rows(es_env["DATABASE_URL"], "SELECT version, state->'state'->'tricks' FROM snapshots ORDER BY 1")
    assert snaps == [(2, ["roll"]), (4, ["roll", "sit", "beg"])]
    # Version 3 comes from the snapshot at 2 plus one event: the snapshot store is asked.
    assert [s.originator_version for s in school.snapshots.get(dog_id, lte=3, desc=True, limit=1)] == [2]


def test_save_kwargs_land_in_metadata_and_find_command(school: DogSchool, es_env: dict[str, str]) -> None:
    command_id, correlation_id = str(uuid4()), uuid4()
    dog_id = school.register_dog(
        "Rex", actor_id="u-7", actor_type="agent", session_id="s-1",
        correlation_id=correlation_id, causation_id="e-0", command_id=command_id,
    )
    (metadata,) = rows(es_env["DATABASE_URL"], "SELECT metadata FROM events WHERE stream_id = %s", (str(dog_id),))
    assert metadata[0] == {
        "actor_id": "u-7", "actor_type": "agent", "session_id": "s-1",
        "correlation_id": str(correlation_id), "causation_id": "e-0", "command_id": command_id,
    }

    recordings = school.add_trick(dog_id, "fetch", command_id="cmd-2")
    found = school.recorder.find_command("cmd-2")
    assert found == [CommandEvent(str(dog_id), 2, recordings[0].notification.id)]
    assert school.recorder.find_command("never-sent") == []

    # A bad actor type is refused before anything is written.
    with pytest.raises(InvalidAppend, match="actor_type"):
        school.add_trick(dog_id, "jump", actor_type="robot")
    assert school.repository.get(dog_id).version == 2


def test_payloads_are_queryable_jsonb(school: DogSchool, notebook: Notebook, es_env: dict[str, str]) -> None:
    school.register_dog("Fido")
    note_id = notebook.write("Minutes", "We met.")
    url = es_env["DATABASE_URL"]
    assert rows(url, "SELECT payload->>'name' FROM events WHERE type = %s", (get_topic(Dog.Registered),)) == [
        ("Fido",)
    ]
    # Typed events: stable name, registered schema version, stream type, clean JSON.
    assert rows(
        url,
        "SELECT stream_id, stream_type, schema_version, payload->>'title', jsonb_typeof(payload->'timestamp')"
        " FROM events WHERE type = 'note.written'",
    ) == [(str(note_id), "note", 1, "Minutes", "string")]
    assert rows(url, "SELECT count(*) FROM events WHERE payload ? 'originator_id'") == [(0,)]


def test_pydantic_events_read_back_typed_and_upcast(notebook: Notebook, es_env: dict[str, str]) -> None:
    note_id = notebook.write("Plan", "v1")
    note = notebook.repository.get(note_id)
    note.edit("v2", reason="typo")
    notebook.save(note)
    events = list(notebook.events.get(note_id))
    assert [type(e) for e in events] == [Note.Written, Note.Edited]
    assert events[1].reason == "typo"



def test_old_schema_versions_are_upcast(notebook: Notebook, es_env: dict[str, str]) -> None:
    note_id = notebook.write("Plan", "v1")
    # An edit stored at schema version 1 (before `reason`), as an old deployment wrote it.
    event_id = uuid4()
    with psycopg.connect(as_owner(es_env["DATABASE_URL"])) as conn:  # the app login may not insert
        conn.execute("UPDATE streams SET version = 2 WHERE stream_id = %s", (str(note_id),))
        conn.execute(
            "INSERT INTO events (event_id, stream_id, stream_type, version, type, schema_version, payload, log_name,"
            " recorded_at, hash)"
            " SELECT %(id)s, %(stream)s, 'note', 2, 'note.edited', 1, %(payload)s::jsonb, 'Notebook', now(),"
            " event_hash(first.hash, %(id)s, %(stream)s, 'note', 2, 'note.edited', 1, %(payload)s::jsonb,"
            " '{}'::jsonb, now())"
            " FROM events first WHERE first.stream_id = %(stream)s AND first.version = 1",
            {"id": event_id, "stream": str(note_id), "payload": '{"body": "old", "timestamp": "2024-01-01T00:00:00Z"}'},
        )
        conn.execute("INSERT INTO log_event_ids SELECT event_id, position FROM events WHERE event_id = %s", (event_id,))
    note = notebook.repository.get(note_id)
    assert note.body == "old"
    assert list(notebook.events.get(note_id))[1].reason == "(not recorded)"


def test_registered_types_are_validated(notebook: Notebook) -> None:
    bad = StoredEvent(uuid4(), 1, "note.written", b'{"title": 5, "body": "b", "originator_topic": "x"}')
    with pytest.raises(InvalidEventPayload, match="'title'"):
        notebook.recorder.insert_events([bad])
    assert notebook.recorder.max_notification_id() is None


def test_one_save_is_one_transaction(school: DogSchool) -> None:
    dog_id = school.register_dog("Fido")
    stale = school.repository.get(dog_id)
    school.add_trick(dog_id, "sit")
    stale.add_trick("roll")  # version 2 again: a clash
    newcomer = Dog("Rex")
    with pytest.raises(IntegrityError):
        school.save(newcomer, stale)
    with pytest.raises(AggregateNotFoundError):
        school.repository.get(newcomer.id)
    assert school.repository.get(dog_id).tricks == ["sit"]


def test_two_applications_do_not_see_each_other(school: DogSchool, es_env: dict[str, str]) -> None:
    other = OtherSchool()
    try:
        mine = school.register_dog("Fido")
        theirs = other.register_dog("Rex")
        ours = school.recorder.select_notifications(None, 10)
        their_log = other.recorder.select_notifications(None, 10)
        assert [n.originator_id for n in ours] == [mine]
        assert [n.originator_id for n in their_log] == [theirs]
        assert school.recorder.max_notification_id() == ours[0].id
        assert other.recorder.select_events(mine) == []
        with pytest.raises(AggregateNotFoundError):
            other.repository.get(mine)
    finally:
        other.close()


def test_topics_filter_by_python_topic_or_stable_name(notebook: Notebook) -> None:
    note_id = notebook.write("a", "b")
    note = notebook.repository.get(note_id)
    note.edit("c", reason="r")
    notebook.save(note)
    by_topic = notebook.recorder.select_notifications(None, 10, topics=[get_topic(Note.Edited)])
    by_name = notebook.recorder.select_notifications(None, 10, topics=["note.edited"])
    assert [n.originator_version for n in by_topic] == [n.originator_version for n in by_name] == [2]


# -- a projection with tracking -------------------------------------------------------------


class TrickCounts(ChronicleTrackingRecorder):
    """A materialised view: tricks per dog, its rows and tracking in one transaction."""

    def add_trick(self, dog_id: str, tracking: Tracking) -> None:
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO trick_counts VALUES (%s, 1)"
                " ON CONFLICT (dog_id) DO UPDATE SET tricks = trick_counts.tricks + 1",
                (dog_id,),
            )
            self.insert_tracking_on(conn, tracking)

    def tricks(self, dog_id: str) -> int:
        with self.datastore.pool.connection() as conn:
            row = conn.execute("SELECT tricks FROM trick_counts WHERE dog_id = %s", (dog_id,)).fetchone()
        return row["tricks"] if row else 0


class TrickCounting(Projection[TrickCounts]):
    topics = (get_topic(Dog.TrickAdded),)

    @singledispatchmethod
    def process_event(self, domain_event: DomainEventProtocol[Any], tracking: Tracking) -> None:
        self.view.insert_tracking(tracking)

    @process_event.register
    def _(self, domain_event: Dog.TrickAdded, tracking: Tracking) -> None:
        self.view.add_trick(str(domain_event.originator_id), tracking)


def test_projection_with_tracking(school: DogSchool, es_env: dict[str, str]) -> None:
    with psycopg.connect(es_env["DATABASE_URL"]) as conn:
        conn.execute("CREATE TABLE trick_counts (dog_id text PRIMARY KEY, tricks int)")
    dog_id = school.register_dog("Fido")
    school.add_trick(dog_id, "roll")
    # The second run is a restart: it resumes after its tracking position, so nothing is counted twice.
    for trick, count in (("sit", 2), ("beg", 3)):
        runner = ProjectionRunner(
            application_class=DogSchool, projection_class=TrickCounting, view_class=TrickCounts, env=es_env
        )
        with runner:
            last = school.add_trick(dog_id, trick)[-1].notification.id
            runner.wait(last, timeout=10)
            assert runner.view.tricks(str(dog_id)) == count
            assert runner.view.max_tracking_id("DogSchool") == last
            assert runner.view.tracker == "TrickCounting"


# -- the log under concurrency ----------------------------------------------------------------


def test_subscription_waits_for_a_late_commit(school: DogSchool) -> None:
    """A subscriber never skips an event whose transaction commits after a later one."""
    store = school.recorder.datastore.store
    early = school.register_dog("Early")
    with school.recorder.subscribe(gt=school.recorder.max_notification_id()) as subscription:
        with store.transaction() as conn:
            late = store.append_on(
                conn, str(uuid4()), 0, [NewEvent(get_topic(Dog.Registered), {"name": "Late"})],
                stream_type="eventsourcing", log_name="DogSchool",
            )
            school.register_dog("After")  # commits first, at a higher position
            assert school.recorder.select_notifications(late.position, 10) == []
        received = [next(subscription).id, next(subscription).id]
    assert received[0] == late.position and received[1] > late.position
    assert early


def test_concurrent_saves_are_all_in_the_log_once(school: DogSchool) -> None:
    def register(n: int) -> None:
        for i in range(15):
            school.register_dog(f"dog-{n}-{i}")

    run_threads([lambda n=n: register(n) for n in range(4)])
    ids = [n.id for n in school.recorder.select_notifications(None, 1000)]
    assert len(ids) == 60 and ids == sorted(set(ids))


# -- payload encoding and configuration --------------------------------------------------------


@pytest.mark.parametrize(
    "state",
    [b'{"a":1,"b":[1,2]}', b"state1", b"[1,2]", b'{"_bytes_":"x"}', b'{"x":NaN}', b'{"x":"\\u0000"}', b"\xff"],
)
def test_any_state_round_trips(state: bytes) -> None:
    """JSON objects are stored as themselves; anything else base64 under `_bytes_`."""
    payload = payload_from_state(state)
    assert state_from_payload(payload) == state
    assert (set(payload) == {"_bytes_"}) == (state != b'{"a":1,"b":[1,2]}')


def test_cipher_is_refused_at_application_start(es_env: dict[str, str]) -> None:
    with pytest.raises(UnreadablePayloadSettings, match="readable jsonb"):
        DogSchool(env={"COMPRESSOR_TOPIC": "eventsourcing.compressor:ZlibCompressor"})


def test_recorder_is_the_chronicle_one(school: DogSchool) -> None:
    assert isinstance(school.recorder, ChronicleApplicationRecorder)
    assert school.recorder.log_name == "DogSchool"
