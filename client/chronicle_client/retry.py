"""When a request is tried again, and how long to wait first: exponential backoff with jitter.

A command is retried with the same Idempotency-Key, so a retry after a lost answer returns the
first answer instead of running twice. Retried: timeouts, dropped connections, 5xx, 429, and
409 `idempotency_key_in_flight` (the first attempt is still running). Retry-After is honoured.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import httpx

RETRIED_STATUSES = frozenset({429, 500, 502, 503, 504})
IN_FLIGHT = "idempotency_key_in_flight"


@dataclass(frozen=True)
class RetryPolicy:
    """How many attempts a request gets, and the backoff between them (seconds)."""

    attempts: int = 5
    base_delay: float = 0.1
    max_delay: float = 5.0
    jitter: bool = True
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """The wait before attempt `attempt + 1` (attempt counts from 1); Retry-After when the server sent one.

        Full jitter keeps many clients that failed together from retrying together.
        """
        if retry_after is not None:
            return min(retry_after, self.max_delay)
        ceiling = min(self.max_delay, self.base_delay * (2 ** (attempt - 1)))
        return self.rng.uniform(0, ceiling) if self.jitter else ceiling


def retryable_error(error: Exception) -> bool:
    """A failure with no answer that a retry may cure: a timeout or a connection dropped or refused."""
    return isinstance(error, (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError))


def retryable_response(response: httpx.Response) -> bool:
    """An answer that says "try again": 5xx, 429, or the first attempt with this key still running."""
    if response.status_code in RETRIED_STATUSES:
        return True
    if response.status_code == 409 and response.headers.get("content-type", "").startswith("application/problem"):
        try:
            return response.json().get("code") == IN_FLIGHT
        except ValueError:
            return False
    return False


def retry_after(response: httpx.Response | None) -> float | None:
    """The Retry-After header's seconds, when the server sent a number."""
    if response is None:
        return None
    value = response.headers.get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def settle(policy: RetryPolicy, attempt: int, response: httpx.Response | None,
           error: Exception | None) -> float | None:
    """After attempt `attempt`: None when `response` is final, else the wait before the next attempt.

    Raises the typed error once the attempts are spent (or at once for a failure no retry cures).
    """
    from chronicle_client.errors import Unavailable, error_for

    if response is not None and not retryable_response(response):
        return None
    if error is not None and not retryable_error(error):
        raise error
    if attempt >= policy.attempts:
        if response is not None:
            raise error_for(response)
        raise Unavailable(f"no answer after {attempt} attempts: {error!r}") from error
    return policy.delay(attempt, retry_after(response))
