"""PostgreSQL connections: the pool, and the session limits every Chronicle session carries.

Directly connected, a session's limits are startup options. Through a transaction-mode pooler
(CHRONICLE_POOLER=transaction) a client's statements run on whichever server session is free,
so the limits are set inside every transaction instead (`PooledConnection`), nothing is
prepared, and work that needs one session throughout (LISTEN, session locks, temporary tables)
connects to DATABASE_DIRECT_URL (`ChroniclePool.session`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import pq
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from infrastructure.config import Settings

# Both limits, and JIT off (session_options says why), for this transaction only (is_local):
# they end with it, whichever session ran it.
LIMITS_SQL = ("SELECT set_config('statement_timeout', %s, true),"
              " set_config('idle_in_transaction_session_timeout', %s, true), set_config('jit', 'off', true)")


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


def pooled(settings: Settings) -> bool:
    """Whether DATABASE_URL (and DATABASE_READ_URL) lead through a transaction-mode pooler."""
    return settings.chronicle_pooler == "transaction"


class PooledCursor(psycopg.Cursor):
    """A cursor that runs a statement outside any transaction in one of its own, so the limits apply."""

    def execute(self, query: Any, params: Any = None, **kwargs: Any) -> PooledCursor:
        conn = self.connection
        if isinstance(conn, PooledConnection) and conn.autocommit and not conn.in_transaction() \
                and conn.pgconn.pipeline_status == pq.PipelineStatus.OFF:
            # BEGIN, the limits, the statement and COMMIT in one round trip.
            with conn.pipeline(), conn.transaction():
                super().execute(query, params, **kwargs)
            return self
        super().execute(query, params, **kwargs)
        return self


class PooledConnection(psycopg.Connection):
    """A connection through a transaction-mode pooler: every transaction starts by setting the limits.

    Set with SET LOCAL semantics they hold for exactly that transaction, on whichever server
    session the pooler lent it; a session-level SET would leak to the pooler's next client.
    """

    limits: tuple[str, str] = ("0", "0")
    _depth = 0

    def in_transaction(self) -> bool:
        """Whether a transaction (or savepoint) opened by `transaction()` is open."""
        return self._depth > 0

    @contextmanager
    def transaction(self, savepoint_name: str | None = None, force_rollback: bool = False) -> Iterator[Any]:
        with super().transaction(savepoint_name, force_rollback) as tx:
            self._depth += 1
            try:
                if self._depth == 1:
                    self.execute(LIMITS_SQL, self.limits)
                yield tx
            finally:
                self._depth -= 1


class ChroniclePool(ConnectionPool):
    """A pool that knows where session work goes: its own connections, or, behind a pooler, a direct one."""

    def __init__(self, url: str, settings: Settings, **kwargs: Any) -> None:
        super().__init__(url, **kwargs)
        self.settings = settings
        self.pooled = pooled(settings)
        self.direct_url = settings.database_direct_url or url

    @contextmanager
    def session(self) -> Iterator[psycopg.Connection]:
        """A connection whose session lasts the whole block (session locks, temporary tables).

        Behind a pooler it is a connection of its own to DATABASE_DIRECT_URL, closed at the end.
        """
        if not self.pooled:
            with self.connection() as conn:
                yield conn
            return
        with connect(self.direct_url, self.settings) as conn:
            yield conn


def connect(url: str, settings: Settings, *, autocommit: bool = True) -> psycopg.Connection:
    """One direct connection outside the pool, with the same session limits (for LISTEN, locks)."""
    return psycopg.connect(
        url, autocommit=autocommit, row_factory=dict_row, options=session_options(settings)
    )


def create_pool(url: str, settings: Settings, *, name: str = "chronicle", replica: bool = False) -> ChroniclePool:
    """An open pool of autocommit connections with dict rows and bounded sessions.

    Behind a transaction-mode pooler: no startup options, no prepared statements (a statement
    prepared on one server session is missing on the next), limits set in each transaction.
    A `replica` pool may open while its server is down, checks each connection it hands out,
    and gives up on a checkout within a second, so reads fall back to the primary quickly.
    """
    kwargs: dict[str, Any] = {"autocommit": True, "row_factory": dict_row, "application_name": name}
    if pooled(settings):
        kwargs.update(prepare_threshold=None, cursor_factory=PooledCursor)
    else:
        kwargs["options"] = session_options(settings)
    pool = ChroniclePool(
        url,
        settings,
        min_size=settings.chronicle_pool_min_size,
        max_size=settings.chronicle_pool_max_size,
        kwargs=kwargs,
        connection_class=PooledConnection if pooled(settings) else psycopg.Connection,
        configure=_limits_configurer(settings) if pooled(settings) else None,
        name=name,
        timeout=min(settings.chronicle_pool_timeout_seconds, 1.0) if replica else settings.chronicle_pool_timeout_seconds,
        check=ConnectionPool.check_connection if replica else None,
        open=False,
    )
    pool.open(wait=not replica, timeout=30)
    return pool


def _limits_configurer(settings: Settings) -> Any:
    """The pool's `configure` hook: give each new pooled connection the limits it sets per transaction."""
    limits = (str(settings.chronicle_statement_timeout_ms), str(settings.chronicle_idle_in_transaction_timeout_ms))

    def configure(conn: psycopg.Connection) -> None:
        conn.limits = limits  # type: ignore[attr-defined]

    return configure


def direct_url(pool: ConnectionPool) -> str:
    """Where this pool's LISTEN and other session work connects: past the pooler, if there is one."""
    return getattr(pool, "direct_url", pool.conninfo)


def session(pool: ConnectionPool) -> Any:
    """`pool.session()` of a ChroniclePool; any other pool's own connection (its sessions are direct)."""
    return pool.session() if isinstance(pool, ChroniclePool) else pool.connection()
