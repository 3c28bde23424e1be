"""UUIDv7 ids (domain/ids.py): RFC 9562 layout, and strictly increasing within a process."""

from __future__ import annotations

import os
import threading
import time
from uuid import UUID

from hypothesis import given, settings, strategies as st

import domain.ids as ids
from domain.ids import uuid7, uuid7_time_ms


def test_layout_is_rfc_9562_version_7():
    before = time.time_ns() // 1_000_000
    value = uuid7()
    after = time.time_ns() // 1_000_000
    assert value.version == 7 and value.variant == "specified in RFC 4122"
    assert (value.int >> 76) & 0xF == 7 and (value.int >> 62) & 0b11 == 0b10
    assert before <= uuid7_time_ms(value) <= after + 1
    assert UUID(str(value)) == value


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=-5, max_value=5), min_size=1, max_size=300))
def test_strictly_increasing_whatever_the_clock_does(steps):
    """The clock may stand still, step forward or step back (the steps, in ms): each id is
    greater than the one before, keeps the version and variant bits, and carries a time no
    earlier than the latest the clock showed."""
    clock = [time.time_ns()]

    def fake_ns() -> int:
        return clock[0]

    real = ids.time.time_ns
    ids.time.time_ns = fake_ns  # this test is about our own counter logic, so the clock is ours
    try:
        previous = uuid7()
        latest = clock[0] // 1_000_000
        for step in steps:
            clock[0] += step * 1_000_000
            latest = max(latest, clock[0] // 1_000_000)
            value = uuid7()
            assert value > previous
            assert value.version == 7 and value.variant == "specified in RFC 4122"
            assert uuid7_time_ms(value) >= latest
            previous = value
    finally:
        ids.time.time_ns = real


def test_a_full_millisecond_borrows_the_next_one():
    """When the counter of a millisecond runs out, the next id moves to the next millisecond."""
    real = ids.time.time_ns
    frozen = real()
    ids.time.time_ns = lambda: frozen
    try:
        first = uuid7()
        ids._counter = (1 << ids._COUNTER_BITS) - 1  # the counter at its end
        second = uuid7()
    finally:
        ids.time.time_ns = real
    assert second > first and uuid7_time_ms(second) == uuid7_time_ms(first) + 1


def test_threads_never_share_an_id():
    made: list[UUID] = []
    lock = threading.Lock()

    def make() -> None:
        mine = [uuid7() for _ in range(2000)]
        assert mine == sorted(mine)
        with lock:
            made.extend(mine)

    threads = [threading.Thread(target=make) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(made)) == len(made) == 8000


def test_a_forked_process_draws_random_bits_of_its_own():
    """Random bytes are drawn from the OS in batches: a child must not reuse its parent's batch."""
    uuid7()  # the batch is drawn
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.write(writer, uuid7().bytes)
        os._exit(0)
    os.close(writer)
    mine = uuid7()
    child = UUID(bytes=os.read(reader, 16))
    os.waitpid(pid, 0)
    os.close(reader)
    rand_b = (1 << 62) - 1  # the counter's low bits and the random tail
    assert child.int & rand_b != mine.int & rand_b
