"""Ids that arrive in order: UUIDv7 (RFC 9562) for the event and stream ids Chronicle makes.

A v7 id starts with its Unix time in milliseconds, so the unique indexes on event and stream
ids take new ids at their right-hand edge instead of at random pages. Within one process the
ids are strictly increasing: within a millisecond, a counter (RFC 9562, section 6.2, method 1)
in rand_a and the top of rand_b orders them; the rest of rand_b is random.
"""

from __future__ import annotations

import os
import threading
import time
from uuid import UUID

_COUNTER_BITS = 42  # rand_a (12 bits) and the top 30 bits of rand_b
# Random bytes drawn from the OS this many at a time: each os.urandom call lets go of the GIL,
# and with busy writer threads winning it back cost more than the rest of making the id.
_RANDOM_BYTES = 4096
_lock = threading.Lock()
_last_ms = 0
_counter = 0
_random = b""
_taken = 0


def _random_bytes(count: int) -> bytes:
    """`count` bytes from the OS's random source, drawn in batches (the caller holds _lock)."""
    global _random, _taken
    if _taken + count > len(_random):
        _random, _taken = os.urandom(_RANDOM_BYTES), 0
    _taken += count
    return _random[_taken - count:_taken]


def _forget_randomness() -> None:
    """A forked process draws its own random bytes and counter: none of its parent's."""
    global _lock, _random, _taken, _last_ms
    _lock, _random, _taken, _last_ms = threading.Lock(), b"", 0, 0


os.register_at_fork(after_in_child=_forget_randomness)


def uuid7() -> UUID:
    """A new UUIDv7: 48 bits of Unix milliseconds, version 7, variant 10, counter, random bits.

    Strictly greater than every id this process made before, even when the clock steps back.
    """
    global _last_ms, _counter
    with _lock:
        now_ms = time.time_ns() // 1_000_000
        if now_ms > _last_ms:
            _last_ms = now_ms
            # A random start with its top bit clear leaves at least 2**41 ids for the millisecond.
            _counter = int.from_bytes(_random_bytes(6), "big") >> (48 - _COUNTER_BITS + 1)
        else:
            _counter += 1
            if _counter >> _COUNTER_BITS:  # the millisecond is used up: borrow the next one
                _last_ms += 1
                _counter = 0
        ms, counter = _last_ms, _counter
        tail = int.from_bytes(_random_bytes(4), "big")
    value = ((ms & (1 << 48) - 1) << 80 | 0x7 << 76 | (counter >> 30) << 64
             | 0b10 << 62 | (counter & (1 << 30) - 1) << 32 | tail)
    return UUID(int=value)


def uuid7_time_ms(value: UUID) -> int:
    """The Unix milliseconds a UUIDv7 carries (its first 48 bits)."""
    return value.int >> 80
