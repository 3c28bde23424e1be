"""Per-process resources of a worker: the database pool, created after fork, on first use."""

from __future__ import annotations

import threading

from psycopg_pool import ConnectionPool

from infrastructure.config import get_settings
from infrastructure.db import create_pool

_lock = threading.Lock()
_pool: ConnectionPool | None = None


def worker_pool() -> ConnectionPool:
    """This process's pool to DATABASE_URL."""
    global _pool
    with _lock:
        if _pool is None:
            settings = get_settings()
            if not settings.database_url:
                raise RuntimeError("workers need DATABASE_URL")
            _pool = create_pool(settings.database_url, settings, name="chronicle-worker")
        return _pool


def close_pool() -> None:
    """Close this process's pool (at worker shutdown)."""
    global _pool
    with _lock:
        if _pool is not None:
            _pool.close()
            _pool = None
