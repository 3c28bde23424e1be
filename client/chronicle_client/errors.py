"""Chronicle's problem+json answers as typed exceptions: switch on the class, read `code` and `field`.

Every error the API sends is RFC 9457 problem details with a stable `code` and, where an input
is at fault, the `field`. `raise_for_problem` maps a response to the exception for its status.
"""

from __future__ import annotations

from typing import Any

import httpx


class ChronicleError(Exception):
    """An error answer from Chronicle: HTTP status, stable code, detail, and the input at fault."""

    def __init__(self, status: int, code: str, detail: str, field: str | None = None,
                 problem: dict[str, Any] | None = None) -> None:
        super().__init__(f"{status} {code}: {detail}" + (f" (field: {field})" if field else ""))
        self.status = status
        self.code = code
        self.detail = detail
        self.field = field
        self.problem = problem or {}


class ValidationError(ChronicleError):
    """The request was refused as malformed or out of bounds (400, 413, 415, 422); `field` names the input."""


class Unauthorized(ChronicleError):
    """No API key, or one Chronicle does not know (401)."""


class Forbidden(ChronicleError):
    """The key's role may not do this (403)."""


class NotFound(ChronicleError):
    """No such resource (404), e.g. `document_not_found`."""


class Gone(ChronicleError):
    """The resource was deleted (410), e.g. `document_deleted`; a lost group lease is gone too."""


class ConflictError(ChronicleError):
    """A version conflict (409) or a failed If-Match (412); `current_stream_version` is the stream's version now."""

    @property
    def current_stream_version(self) -> int | None:
        """The stream's version when the command was refused: re-read, then retry with it."""
        value = self.problem.get("current_stream_version")
        return int(value) if value is not None else None


class ServerError(ChronicleError):
    """Chronicle failed (5xx) on every attempt the retry policy allowed."""


class Unavailable(ChronicleError):
    """No answer: the connection failed or timed out on every attempt the retry policy allowed."""

    def __init__(self, detail: str) -> None:
        super().__init__(0, "unavailable", detail)


_BY_STATUS: dict[int, type[ChronicleError]] = {
    400: ValidationError, 401: Unauthorized, 403: Forbidden, 404: NotFound, 409: ConflictError, 410: Gone,
    412: ConflictError, 413: ValidationError, 415: ValidationError, 422: ValidationError,
}


def problem_of(response: httpx.Response) -> dict[str, Any]:
    """The problem+json body of an error response; a bare one built from the status when it has none."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        body = {"status": response.status_code, "code": f"http_{response.status_code}",
                "detail": response.text[:500] or response.reason_phrase}
    return body


def error_for(response: httpx.Response) -> ChronicleError:
    """The typed exception for an error response (status 400 and above)."""
    problem = problem_of(response)
    status = response.status_code
    kind = _BY_STATUS.get(status) or (ServerError if status >= 500 else ChronicleError)
    return kind(status, str(problem.get("code") or f"http_{status}"), str(problem.get("detail") or ""),
                problem.get("field"), problem)


def raise_for_problem(response: httpx.Response) -> httpx.Response:
    """Return a successful response as it is; raise the typed exception for an error one."""
    if response.status_code >= 400:
        raise error_for(response)
    return response
