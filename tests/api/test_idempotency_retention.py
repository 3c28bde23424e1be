"""Idempotency-Key responses are replayed for the retention, then freed and pruned (real PostgreSQL)."""

from __future__ import annotations

import asyncio

import pytest

from api.middleware import _claim, _complete, prune_idempotency_keys
from infrastructure.db import create_pool

DAY = 24 * 3600.0


@pytest.fixture
def pool(fresh_database_url, settings):
    """A database of this test's own: pruning counts every expired row."""
    pool = create_pool(fresh_database_url, settings, name="chronicle-tests")
    yield pool
    pool.close()


def _age(pool, idem: str, hours: float) -> None:
    with pool.connection() as conn:
        conn.execute("UPDATE idempotency_keys SET created_at = now() - make_interval(hours => %s)"
                     " WHERE idempotency_key = %s", (hours, idem))


def test_a_stored_response_is_replayed_until_the_retention_ends(pool):
    assert _claim(pool, "k1", "order-1", "hash-a", "POST", "/v1/documents", DAY) is None  # first: runs
    _complete(pool, "k1", "order-1", 201, {"etag": '"1"'}, b'{"version": 1}')
    _age(pool, "order-1", 23)
    stored = _claim(pool, "k1", "order-1", "hash-a", "POST", "/v1/documents", DAY)
    assert stored is not None and stored["status"] == 201 and bytes(stored["body"]) == b'{"version": 1}'

    _age(pool, "order-1", 25)  # past the retention: the key is free, and the request runs again
    assert _claim(pool, "k1", "order-1", "hash-b", "POST", "/v1/documents", DAY) is None
    again = _claim(pool, "k1", "order-1", "hash-b", "POST", "/v1/documents", DAY)
    assert again is not None and again["status"] is None and again["request_hash"] == "hash-b"  # in flight


def test_pruning_deletes_only_expired_responses(pool):
    for n in range(5):
        assert _claim(pool, "k1", f"key-{n}", "h", "POST", "/v1/chains", DAY) is None
        _complete(pool, "k1", f"key-{n}", 201, {}, b"{}")
    for n in range(3):
        _age(pool, f"key-{n}", 30)
    assert prune_idempotency_keys(pool, DAY, batch=2) == 3  # in batches of 2
    with pool.connection() as conn:
        left = [r["idempotency_key"] for r in conn.execute(
            "SELECT idempotency_key FROM idempotency_keys ORDER BY 1").fetchall()]
    assert left == ["key-3", "key-4"]
    assert prune_idempotency_keys(pool, DAY) == 0


def test_the_api_prunes_expired_responses_while_it_runs(fresh_database_url, settings, pool, monkeypatch):
    """The API's own loop, not just the function it calls: started with the app, run every PRUNE_SECONDS."""
    import api.app

    for n in range(2):
        assert _claim(pool, "k1", f"key-{n}", "h", "POST", "/v1/chains", DAY) is None
        _complete(pool, "k1", f"key-{n}", 201, {}, b"{}")
    _age(pool, "key-0", 30)
    monkeypatch.setattr(api.app, "PRUNE_SECONDS", 0.05)
    app = api.app.create_app(fresh_database_url, settings, broker="absent")

    def stored_keys() -> list[str]:
        with pool.connection() as conn:
            return [r["idempotency_key"] for r in conn.execute(
                "SELECT idempotency_key FROM idempotency_keys ORDER BY 1").fetchall()]

    async def run_app_until_pruned() -> list[str]:
        async with app.router.lifespan_context(app):  # the app's start and stop, as uvicorn runs them
            for _ in range(200):
                await asyncio.sleep(0.05)
                if (left := stored_keys()) == ["key-1"]:
                    break
        return left

    assert asyncio.run(run_app_until_pruned()) == ["key-1"]
