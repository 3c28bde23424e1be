"""The API key cache: a checked key is trusted for CHRONICLE_API_KEY_CACHE_SECONDS, never longer.

The keys are real rows in PostgreSQL; only the cache's clock is ours, so the bound is shown
without waiting (the test is about the cache's own logic).
"""

from __future__ import annotations

from service_layer.keys import KeyCache, create_key, revoke_key


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_key_revoked_elsewhere_stops_working_within_the_ttl(pool) -> None:
    clock = Clock()
    cache = KeyCache(1.0, clock=clock)
    key, token = create_key(pool, "cached-writer", "writer")
    assert cache.authenticate(pool, token).key_id == key.key_id

    revoke_key(pool, key.key_id)  # as `chronicle keys revoke` or another API process would
    clock.now += 0.5
    assert cache.get(token) is not None  # within the bound it may still be served from the cache
    clock.now += 0.5  # the TTL has passed: the database is asked again and says revoked
    assert cache.get(token) is None
    assert cache.authenticate(pool, token) is None
    assert cache.authenticate(pool, token) is None


def test_a_key_revoked_through_this_process_stops_at_once(pool) -> None:
    clock = Clock()
    cache = KeyCache(1.0, clock=clock)
    key, token = create_key(pool, "revoked-here", "reader")
    other, other_token = create_key(pool, "kept", "reader")
    assert cache.authenticate(pool, token) and cache.authenticate(pool, other_token)
    revoke_key(pool, key.key_id)
    cache.forget(key.key_id)  # what DELETE /v1/keys/{id} does after revoking
    assert cache.authenticate(pool, token) is None
    assert cache.get(other_token).key_id == other.key_id  # other keys stay cached


def test_unknown_tokens_are_never_cached_and_a_zero_ttl_caches_nothing(pool) -> None:
    clock = Clock()
    cache = KeyCache(1.0, clock=clock)
    key, token = create_key(pool, "right-secret", "writer")
    wrong = token[:-4] + ("aaaa" if not token.endswith("aaaa") else "bbbb")
    assert cache.authenticate(pool, wrong) is None
    assert cache.get(wrong) is None
    assert cache.authenticate(pool, token).key_id == key.key_id

    uncached = KeyCache(0.0, clock=clock)
    assert uncached.authenticate(pool, token).key_id == key.key_id
    assert uncached.get(token) is None
