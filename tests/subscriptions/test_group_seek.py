"""Moving a group's checkpoints while its members fetch: a seek is never undone by a fetch that
read the checkpoints before it, and the move and its `operator.group_moved` event are one."""

from __future__ import annotations

import uuid

import pytest

from infrastructure.event_store import EventStore
from service_layer import group_delivery
from service_layer.group_delivery import ack, fetch
from service_layer.group_seek import seek_group
from service_layer.groups import join
from tests.subscriptions.conftest import append, log_head

PARTITIONS = 4


def _member_at_head(pool, group: str) -> str:
    """A member of a new group that has fetched and acked the whole log: its checkpoints at the head."""
    member = join(pool, group, "seeker", 60, "test-key", PARTITIONS).member_id
    head = log_head(pool)
    while (read := fetch(pool, group, member, 1000).position) < head:
        ack(pool, group, member, read)
    ack(pool, group, member, head)
    return member


def _checkpoints(pool, group: str) -> list[tuple[int, int]]:
    with pool.connection() as conn:
        return [(r["position"], r["delivered"]) for r in conn.execute(
            "SELECT position, delivered FROM consumer_group_checkpoint WHERE group_name = %s ORDER BY partition",
            (group,)).fetchall()]


def test_a_fetch_reading_before_a_seek_back_does_not_undo_it(feed_pool, feed_store, monkeypatch) -> None:
    group, stream = f"s-{uuid.uuid4().hex[:8]}", f"seek-{uuid.uuid4().hex[:6]}"
    member = _member_at_head(feed_pool, group)
    back_to = log_head(feed_pool)
    delivered = [append(feed_store, stream, n=n).positions[0] for n in range(3)]
    while (read := fetch(feed_pool, group, member, 1000).position) < log_head(feed_pool):
        ack(feed_pool, group, member, read)
    ack(feed_pool, group, member, read)
    later = append(feed_store, stream, n=3).positions[0]
    read_page = group_delivery.read_page

    def seek_while_reading(*args, **kwargs):
        """The operator's seek back commits after the fetch read the checkpoints, before it writes."""
        page = read_page(*args, **kwargs)
        seek_group(feed_pool, feed_store, group, back_to, actor_id="ops", actor_type="user")
        return page

    monkeypatch.setattr(group_delivery, "read_page", seek_while_reading)
    raced = fetch(feed_pool, group, member, 1000)
    monkeypatch.undo()
    assert [e.position for e, _ in raced.events if e.stream_id == stream] == []  # its checkpoint moved
    assert _checkpoints(feed_pool, group) == [(back_to, back_to)] * PARTITIONS  # the seek stands
    ack(feed_pool, group, member, raced.position)  # a member acks what it was given: nothing is lost
    again = fetch(feed_pool, group, member, 1000)
    assert [e.position for e, _ in again.events if e.stream_id == stream] == [*delivered, later]


def test_a_seek_whose_event_fails_moves_nothing(feed_pool, monkeypatch) -> None:
    group = f"s-{uuid.uuid4().hex[:8]}"
    _member_at_head(feed_pool, group)
    before = _checkpoints(feed_pool, group)
    store = EventStore(feed_pool)

    def refuse(*args, **kwargs):
        raise RuntimeError("the operator stream refuses the append")

    monkeypatch.setattr(store, "append", refuse)
    monkeypatch.setattr(store, "append_on", refuse)
    with pytest.raises(RuntimeError, match="refuses"):
        seek_group(feed_pool, store, group, 0, actor_id="ops", actor_type="user")
    assert _checkpoints(feed_pool, group) == before
