"""Fixtures for the persistence-module tests: the environment an Application is built from.

Each test gets its own empty migrated database (from tests/conftest.py's template), so
notification ids start at 1 as the library's recorder tests expect.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

PERSISTENCE_MODULE = "infrastructure.persistence"


@pytest.fixture
def es_env(fresh_database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """An eventsourcing environment on a fresh Chronicle database (also set in os.environ).

    Small pools keep the shared machine's connection count down.
    """
    env = {
        "PERSISTENCE_MODULE": PERSISTENCE_MODULE,
        "DATABASE_URL": fresh_database_url,
        "CHRONICLE_POOL_MIN_SIZE": "1",
        "CHRONICLE_POOL_MAX_SIZE": "4",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    yield env
