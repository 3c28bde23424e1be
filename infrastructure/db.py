"""PostgreSQL connections: the pool, and the session limits every Chronicle session carries."""

from __future__ import annotations

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from infrastructure.config import Settings


def session_options(settings: Settings) -> str:
    """libpq `options` that bound a session's statements and idle transactions, and turn JIT off.

    A writer left idle in a transaction holds the log back; these timeouts end it. JIT is off:
    Chronicle's statements read a page through an index, and a plan whose estimate grows with the
    log (a recursive causation query) would otherwise pay tens of ms compiling it at every call.
    """
    return (
        f"-c statement_timeout={settings.chronicle_statement_timeout_ms}"
        f" -c idle_in_transaction_session_timeout={settings.chronicle_idle_in_transaction_timeout_ms}"
        " -c jit=off"
    )


def connect(url: str, settings: Settings, *, autocommit: bool = True) -> psycopg.Connection:
    """One connection outside the pool, with the same session limits (for LISTEN, locks)."""
    return psycopg.connect(
        url, autocommit=autocommit, row_factory=dict_row, options=session_options(settings)
    )


def create_pool(url: str, settings: Settings, *, name: str = "chronicle") -> ConnectionPool:
    """An open pool of autocommit connections with dict rows and bounded sessions."""
    pool = ConnectionPool(
        url,
        min_size=settings.chronicle_pool_min_size,
        max_size=settings.chronicle_pool_max_size,
        kwargs={
            "autocommit": True,
            "row_factory": dict_row,
            "options": session_options(settings),
            "application_name": name,
        },
        name=name,
        timeout=settings.chronicle_pool_timeout_seconds,
        open=False,
    )
    pool.open(wait=True, timeout=30)
    return pool
