"""What a save through the library's recorder no longer does twice, and that it stores the same.

A library event's state text is appended as it is when encoding its payload again would give
the same JSON (it holds no float); a save's metadata of text is validated once per process.
"""

from __future__ import annotations

from typing import Any
from uuid import uuid4

import psycopg
import pytest
from eventsourcing.persistence import StoredEvent

from domain.document import DocumentUpdated
from domain.event_types import registry
from infrastructure.errors import InvalidAppend
from infrastructure.event_store import EncodedPayload, EventMetadata
from infrastructure.eventsourcing_mapper import encoded_payload_from_state, payload_from_state
from tests.persistence.models import DogSchool

KEPT = (b'{"a":1,"b":[1,2],"c":{"d":null,"e":true}}', b'{ "t" : "\\u00e9", "n" : -0 }')


@pytest.mark.parametrize(
    "state",
    [*KEPT, b'{"x":1.50}', b'{"x":1e400}', b'{"x":NaN}', b'{"x":"\\u0000"}', b'{"_bytes_":"x"}', b"[1,2]", b"\xff"],
)
def test_a_library_state_keeps_its_text_unless_it_holds_a_float(state: bytes) -> None:
    payload = encoded_payload_from_state(state)
    assert payload == payload_from_state(state)
    assert isinstance(payload, EncodedPayload) == (state in KEPT)
    if state in KEPT:
        assert payload.text == state.decode()


@pytest.fixture
def school(es_env: dict[str, str]) -> Any:
    app = DogSchool()
    yield app
    app.close()


def _stored(url: str, stream_id: str) -> Any:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT payload, payload::text FROM events WHERE stream_id = %s", (stream_id,)).fetchone()


def test_library_states_are_stored_and_refused_as_their_payloads_encoded_again(
    school: DogSchool, es_env: dict[str, str]
) -> None:
    kept, floats = uuid4(), uuid4()
    school.recorder.insert_events([StoredEvent(kept, 1, "tests:Thing", b'{ "t" : "\\u00e9", "n" : 1 }')])
    school.recorder.insert_events([StoredEvent(floats, 1, "tests:Thing", b'{"x":1.50,"y":1E2}')])
    assert _stored(es_env["DATABASE_URL"], str(kept))[0] == {"t": "\u00e9", "n": 1}
    assert _stored(es_env["DATABASE_URL"], str(floats))[1] == '{"x": 1.5, "y": 100.0}'
    with pytest.raises(InvalidAppend, match="payload is not JSON"):
        school.recorder.insert_events([StoredEvent(uuid4(), 1, "tests:Thing", b'{"x":1e400}')])


def test_metadata_is_validated_once_a_save_and_refused_every_time(school: DogSchool, es_env: dict[str, str]) -> None:
    datastore = school.recorder.datastore
    assert datastore.event_metadata({"actor_id": "a", "actor_type": "user"}) == EventMetadata(
        actor_id="a", actor_type="user")
    assert datastore.event_metadata({"actor_type": "robot"}) == {"actor_type": "robot"}
    for _ in range(2):
        with pytest.raises(InvalidAppend, match="actor_type"):
            school.register_dog("Rex", actor_id="a", actor_type="robot")
    school.register_dog("Fido", actor_id="a", actor_type="user", attempt=2)
    with psycopg.connect(es_env["DATABASE_URL"]) as conn:
        assert conn.execute("SELECT metadata FROM events").fetchall() == [({"actor_id": "a", "actor_type": "user",
                                                                          "attempt": 2},)]


def test_a_registered_event_is_stored_as_its_validated_dump_would_be() -> None:
    event = DocumentUpdated(originator_id=uuid4(), originator_version=3, content="x", change_description="", version=2)
    envelope = {"originator_id": str(event.originator_id), "originator_version": 3}
    dumped = event.model_dump(mode="json", exclude={"originator_id", "originator_version"})
    event_type = registry.get("document.updated")
    assert event_type.payload_json(event, envelope) == event_type.payload_json(dumped, envelope)
