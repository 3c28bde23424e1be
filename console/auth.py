"""Console sign-in: an API key exchanged for a server-side session, a cookie, and CSRF tokens.

The cookie holds a random session token (HttpOnly, SameSite=Strict, with an expiry); the
database holds only its hash. Every request checks the session, then the key through the
lookup the API uses (service_layer/keys.py), so a revoked key ends its sessions at once.
Every form carries the session's CSRF token; the sign-in form, before a session exists,
carries a token that must match a cookie set with the form (double submit).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from psycopg_pool import ConnectionPool
from starlette.requests import Request

from service_layer.keys import ApiKey, authenticate, live_key

SESSION_COOKIE = "chronicle_console"
SIGN_IN_COOKIE = "chronicle_console_signin"
PATH = "/console"


@dataclass(frozen=True)
class Viewer:
    """A signed-in person: their live key and their session's CSRF token."""

    key: ApiKey
    csrf_token: str


class SignInNeeded(Exception):
    """No session, an expired one, or one whose key is revoked: the sign-in page answers (401)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class CsrfRefused(Exception):
    """A POST without the form's CSRF token: refused with a 403 page."""


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def sign_in(pool: ConnectionPool, api_key: str, minutes: int) -> tuple[ApiKey, str] | None:
    """A new session for a live key (its cookie token), or None if the key is not live.

    Expired sessions are deleted on the way (console_session_expires_idx).
    """
    key = authenticate(pool, api_key.strip())
    if key is None:
        return None
    token = secrets.token_urlsafe(32)
    with pool.connection() as conn:
        conn.execute("DELETE FROM console_session WHERE expires_at < now()")
        conn.execute(
            "INSERT INTO console_session (token_hash, key_id, csrf_token, expires_at)"
            " VALUES (%s, %s, %s, now() + make_interval(mins => %s))",
            (_hash(token), key.key_id, secrets.token_urlsafe(32), minutes),
        )
    return key, token


def sign_out(pool: ConnectionPool, token: str | None) -> None:
    """End the session the cookie names, if any."""
    if token:
        with pool.connection() as conn:
            conn.execute("DELETE FROM console_session WHERE token_hash = %s", (_hash(token),))


def viewer(pool: ConnectionPool, request: Request) -> Viewer:
    """The signed-in viewer of this request; SignInNeeded if the session is missing, expired or its key revoked."""
    token = request.cookies.get(SESSION_COOKIE)
    if not token or len(token) > 200:
        raise SignInNeeded("Sign in with an API key.")
    with pool.connection() as conn:
        row = conn.execute(
            "SELECT key_id, csrf_token, expires_at < now() AS expired FROM console_session WHERE token_hash = %s",
            (_hash(token),),
        ).fetchone()
    if row is None:
        raise SignInNeeded("Your session has ended. Sign in again.")
    if row["expired"]:
        sign_out(pool, token)
        raise SignInNeeded("Your session has expired. Sign in again.")
    key = live_key(pool, row["key_id"])
    if key is None:
        sign_out(pool, token)
        raise SignInNeeded("The API key of this session was revoked. Sign in with a live key.")
    return Viewer(key, row["csrf_token"])


def check_csrf(expected: str | None, form: dict[str, str]) -> None:
    """Refuse (CsrfRefused) a form whose csrf_token is missing or not `expected`."""
    sent = form.get("csrf_token", "")
    if not expected or not sent or not hmac.compare_digest(sent.encode(), expected.encode()):
        raise CsrfRefused()


def new_sign_in_token() -> str:
    """A fresh token for the sign-in form and its cookie."""
    return secrets.token_urlsafe(24)
