"""API keys: created once (the secret is shown once), stored hashed, checked per request.

A key is `chr_<key_id>_<secret>`. The key id is public (it names the key in lists and in
event metadata); only sha256(secret) is stored. Secrets are 256 random bits, so a fast
hash is enough: there is nothing to brute-force.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg_pool import ConnectionPool

ROLES: tuple[str, ...] = ("writer", "reader", "auditor", "operator", "admin", "subscriber")
KEY_FORMAT = re.compile(r"^chr_([a-z0-9]{12})_([A-Za-z0-9_-]{20,100})$")
LAST_USED_RESOLUTION_SECONDS = 60
NAME_FORMAT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._:@/+=-]{0,99}$")

# What each permission allows, and which roles hold it. Admin holds every permission.
PERMISSIONS: dict[str, frozenset[str]] = {
    "read": frozenset({"reader", "writer", "auditor", "admin"}),
    "write": frozenset({"writer", "admin"}),
    "audit": frozenset({"auditor", "admin"}),
    "operate": frozenset({"operator", "admin"}),
    "keys": frozenset({"admin"}),
    # Following the log (GET /v1/subscribe, consumer groups): every event with its metadata, as
    # auditors see it, but none of the snapshot reads, writes or operator routes.
    "subscribe": frozenset({"subscriber", "auditor", "admin"}),
    # The event contract (GET /v1/event-types): every key may read what the events look like.
    "describe": frozenset(ROLES),
}


@dataclass(frozen=True)
class ApiKey:
    """A stored key, without its secret: who it speaks for and what it may do."""

    key_id: str
    name: str
    role: str
    actor_id: str
    actor_type: str
    created_by: str | None
    created_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None = None

    def allows(self, permission: str) -> bool:
        """Whether this key's role holds `permission` (read, write, audit, operate, keys)."""
        return self.role in PERMISSIONS[permission]

    def public(self) -> dict[str, Any]:
        """The key as JSON-able data, never with its secret or hash."""
        return {
            "key_id": self.key_id,
            "name": self.name,
            "role": self.role,
            "actor_id": self.actor_id,
            "actor_type": self.actor_type,
            "created_by": self.created_by,
            "created_at": self.created_at.isoformat(),
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
            "last_used_at": self.last_used_at.isoformat() if self.last_used_at else None,
        }


class KeyError_(ValueError):
    """A key request that cannot be honoured; `code` and `field` say why."""

    def __init__(self, message: str, *, code: str, field: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.field = field


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


_COLUMNS = "key_id, name, role, actor_id, actor_type, created_by, created_at, revoked_at, last_used_at"


def create_key(
    pool: ConnectionPool,
    name: str,
    role: str,
    *,
    actor_id: str | None = None,
    actor_type: str = "service",
    created_by: str | None = None,
) -> tuple[ApiKey, str]:
    """Store a new key and return it with its full secret token (shown only this once).

    The actor id defaults to the key's name: the identity events record for its commands.
    """
    if role not in ROLES:
        raise KeyError_(f"role must be one of {', '.join(ROLES)}", code="invalid_role", field="role")
    if not isinstance(name, str) or not NAME_FORMAT.match(name):
        raise KeyError_("name must be 1-100 letters, digits, spaces or ._:@/+=-", code="invalid_name", field="name")
    actor_id = actor_id or name
    if not NAME_FORMAT.match(actor_id):
        raise KeyError_("actor_id must be 1-100 letters, digits or ._:@/+=-", code="invalid_actor", field="actor_id")
    if actor_type not in ("user", "agent", "service", "system"):
        raise KeyError_("actor_type must be user, agent, service or system", code="invalid_actor", field="actor_type")
    key_id = "".join(secrets.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(12))
    secret = secrets.token_urlsafe(32)
    with pool.connection() as conn:
        row = conn.execute(
            f"INSERT INTO api_keys (key_id, secret_hash, name, role, actor_id, actor_type, created_by)"
            f" VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING {_COLUMNS}",
            (key_id, _hash(secret), name, role, actor_id, actor_type, created_by),
        ).fetchone()
    return ApiKey(**row), f"chr_{key_id}_{secret}"


def authenticate(pool: ConnectionPool, token: str) -> ApiKey | None:
    """The live key a bearer token belongs to, or None if it is malformed, unknown or revoked.

    The hash comparison takes constant time.
    """
    match = KEY_FORMAT.match(token or "")
    if not match:
        return None
    key_id, secret = match.groups()
    return _live(pool, key_id, secret)


def live_key(pool: ConnectionPool, key_id: str) -> ApiKey | None:
    """The key `key_id` if it exists and is not revoked, else None (a console session's key check).

    The same lookup as `authenticate`, for a caller that proved the key once and holds its id.
    """
    return _live(pool, key_id, None)


def _live(pool: ConnectionPool, key_id: str, secret: str | None) -> ApiKey | None:
    """The unrevoked key `key_id` (whose secret matches, if one is given); its use is recorded."""
    with pool.connection() as conn:
        row = conn.execute(
            f"SELECT secret_hash, {_COLUMNS} FROM api_keys WHERE key_id = %s", (key_id,)
        ).fetchone()
    if row is None or row["revoked_at"] is not None:
        return None
    stored = row.pop("secret_hash")
    if secret is not None and not hmac.compare_digest(stored, _hash(secret)):
        return None
    last = row["last_used_at"]
    if last is None or (datetime.now(last.tzinfo) - last).total_seconds() > LAST_USED_RESOLUTION_SECONDS:
        # Recorded at most once a minute per key, so reads stay reads.
        with pool.connection() as conn:
            conn.execute("UPDATE api_keys SET last_used_at = now() WHERE key_id = %s", (key_id,))
    return ApiKey(**row)


class KeyCache:
    """Live keys by bearer token for `ttl` seconds, so most requests skip the key lookup.

    A key revoked through this process (`forget`) is refused at once; one revoked elsewhere
    (the CLI, another API process) within `ttl` seconds. Unknown tokens are never cached.
    """

    def __init__(self, ttl: float, *, max_entries: int = 10_000, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self.clock = clock
        self._entries: dict[str, tuple[ApiKey, float]] = {}
        self._lock = threading.Lock()

    def get(self, token: str) -> ApiKey | None:
        """The key cached for `token` if it was live less than `ttl` seconds ago, else None."""
        entry = self._entries.get(token)
        if entry is None or entry[1] <= self.clock():
            return None
        return entry[0]

    def put(self, token: str, key: ApiKey) -> None:
        """Remember a live key for `ttl` seconds (nothing when ttl is 0)."""
        if self.ttl <= 0:
            return
        with self._lock:
            if len(self._entries) >= self.max_entries:
                self._entries.clear()  # a burst of distinct keys: start over rather than grow
            self._entries[token] = (key, self.clock() + self.ttl)

    def forget(self, key_id: str) -> None:
        """Drop every cached token of `key_id` (it was just revoked)."""
        with self._lock:
            self._entries = {t: e for t, e in self._entries.items() if e[0].key_id != key_id}

    def authenticate(self, pool: ConnectionPool, token: str) -> ApiKey | None:
        """`authenticate`, answered from the cache when it can be."""
        key = self.get(token)
        if key is None:
            key = authenticate(pool, token)
            if key is not None:
                self.put(token, key)
        return key


def list_keys(pool: ConnectionPool, *, include_revoked: bool = True) -> list[ApiKey]:
    """Every key, oldest first, without secrets."""
    with pool.connection() as conn:
        rows = conn.execute(
            f"SELECT {_COLUMNS} FROM api_keys WHERE %s OR revoked_at IS NULL ORDER BY created_at, key_id",
            (include_revoked,),
        ).fetchall()
    return [ApiKey(**row) for row in rows]


def get_key(pool: ConnectionPool, key_id: str) -> ApiKey | None:
    """One key by id, revoked or not, or None (`keys revoke` tells a second revocation apart)."""
    with pool.connection() as conn:
        row = conn.execute(f"SELECT {_COLUMNS} FROM api_keys WHERE key_id = %s", (key_id,)).fetchone()
    return ApiKey(**row) if row else None


def revoke_key(pool: ConnectionPool, key_id: str) -> ApiKey | None:
    """Revoke a key at once (its next request gets 401); None if there is no such key.

    Revoking twice keeps the first revocation time.
    """
    with pool.connection() as conn:
        row = conn.execute(
            f"UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE key_id = %s RETURNING {_COLUMNS}",
            (key_id,),
        ).fetchone()
    return ApiKey(**row) if row else None


def has_admin_key(pool: ConnectionPool) -> bool:
    """Whether any live admin key exists (the first `chronicle up` makes one if not)."""
    with pool.connection() as conn:
        row = conn.execute(
            "SELECT EXISTS (SELECT 1 FROM api_keys WHERE role = 'admin' AND revoked_at IS NULL) AS found"
        ).fetchone()
    return bool(row["found"])
