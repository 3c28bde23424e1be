from pydantic import BaseModel

from domain.event_types import EventTypeRegistry
from infrastructure.event_store import ANY, NO_STREAM, EventStore, NewEvent


def test_smoke(pool, settings):
    reg = EventTypeRegistry()

    @reg.register("note.written")
    class Written(BaseModel):
        text: str

    store = EventStore(pool, reg, settings)
    r = store.append("note-1", NO_STREAM, [NewEvent("note.written", {"text": "a"})], {"actor_id": "u1", "actor_type": "user"})
    assert r.version == 1
    r2 = store.append("note-1", 1, [NewEvent("note.written", {"text": "b"}), NewEvent("note.written", {"text": "c"})])
    assert r2.version == 3 and len(r2.positions) == 2
    evs = store.read_all(0, 100)
    assert [e.payload["text"] for e in evs][-3:] == ["a", "b", "c"]
    assert store.head() >= r2.position
    print(store.read_stream("note-1"))
