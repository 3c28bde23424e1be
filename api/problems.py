"""RFC 9457 problem details: every error the API returns, with a stable code and the field.

Domain and store errors carry `code` and `field`; they are mapped to a status here, once.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

logger = logging.getLogger("chronicle.api")
PROBLEM_JSON = "application/problem+json"

# Error codes raised below the API, mapped to HTTP statuses. Anything with a `code` that is
# not listed is a broken rule (409) if it is a domain error, or a validation error (422).
STATUS_BY_CODE: dict[str, int] = {
    "version_conflict": 409,
    "event_id_reused": 409,
    "invalid_append": 422,
    "invalid_event": 422,
    "unknown_event_type": 422,
    "invalid_event_payload": 422,
    "validation_error": 422,
    "not_found": 404,
    "version_not_found": 404,
    "tag_not_found": 404,
    "stream_not_found": 404,
    "content_kind": 422,
    "unknown_command": 422,
    "already_exists": 409,
    # A deleted stream answers the same on reads and commands: gone (restore brings a document back).
    "chain_deleted": 410,
    "document_deleted": 410,
    "agent_deleted": 410,
}


class Problem(Exception):
    """An error the API answers with: HTTP status, stable code, message and offending field."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        *,
        field: str | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.field = field
        self.headers = headers or {}
        self.extra = extra


TITLES = {
    400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 409: "Conflict", 410: "Gone", 412: "Precondition Failed",
    413: "Content Too Large", 415: "Unsupported Media Type", 422: "Unprocessable Content",
    428: "Precondition Required", 500: "Internal Server Error", 503: "Service Unavailable",
}


def problem_body(
    status: int, code: str, detail: str, field: str | None = None, instance: str | None = None, **extra: Any
) -> dict[str, Any]:
    """The problem+json document for one error.

    `type` is a stable URI built from the code, so clients can switch on either.
    """
    body: dict[str, Any] = {
        "type": f"https://chronicle.dev/problems/{code}",
        "title": TITLES.get(status, "Error"),
        "status": status,
        "code": code,
        "detail": detail,
        "field": field,
    }
    if instance:
        body["instance"] = instance
    body.update(extra)
    return body


def problem_response(
    status: int,
    code: str,
    detail: str,
    field: str | None = None,
    *,
    instance: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    """A problem+json response.

    Used by the exception handlers and by middleware that answers before routing.
    """
    return JSONResponse(
        problem_body(status, code, detail, field, instance, **extra),
        status_code=status,
        media_type=PROBLEM_JSON,
        headers=headers,
    )


def from_error(exc: Exception) -> Problem | None:
    """A Problem for an error from the store or the domain, or None if it is not one of ours.

    Conflicts carry the stream's current version; rule errors become 409, bad input 422.
    """
    code = getattr(exc, "code", None)
    if not isinstance(code, str):
        return None
    field = getattr(exc, "field", None)
    status = getattr(exc, "http_status", None) or STATUS_BY_CODE.get(code)
    extra: dict[str, Any] = {}
    actual = getattr(exc, "actual", None)
    if actual is None:
        actual = getattr(exc, "current_version", None)
    if isinstance(actual, int):
        extra["current_stream_version"] = actual
    if status is None:
        name = type(exc).__name__.lower()
        if code.startswith(("invalid_", "too_", "missing_")) or code.endswith("_invalid"):
            status = 422
        elif "notfound" in name or code.endswith("not_found") or code.startswith("unknown_"):
            status = 404
        elif "conflict" in name or code.endswith("conflict"):
            status = 409
        elif isinstance(exc, ValueError) and ("invalid" in code or "validation" in name):
            status = 422
        else:
            status = 409  # a domain rule the command would break
    return Problem(status, code, str(exc), field=field if isinstance(field, str) else None, **extra)


# How long a client should wait before retrying when the database cannot be reached.
RETRY_AFTER_UNAVAILABLE = "2"


def _unavailable_classes() -> tuple[type[BaseException], ...]:
    import psycopg
    import psycopg_pool

    classes: list[type[BaseException]] = [psycopg.OperationalError, psycopg.InterfaceError, psycopg_pool.PoolTimeout]
    try:  # the eventsourcing persistence module re-raises psycopg errors as the library's own
        from eventsourcing.persistence import InterfaceError, OperationalError

        classes += [OperationalError, InterfaceError]
    except ImportError:  # pragma: no cover
        pass
    return tuple(classes)


def unavailable(exc: BaseException) -> Problem | None:
    """503 with Retry-After when `exc` (or what caused it) says the database cannot be used now.

    PostgreSQL down or restarting, a connection lost mid-request, the pool exhausted, a
    statement cancelled by its timeout: the request may well succeed when retried.
    """
    classes = _unavailable_classes()
    seen = 0
    current: BaseException | None = exc
    while current is not None and seen < 6:
        if isinstance(current, classes):
            return Problem(
                503, "database_unavailable",
                "the database cannot be reached right now; nothing was acknowledged, retry shortly "
                "(with the same Idempotency-Key for commands)",
                headers={"Retry-After": RETRY_AFTER_UNAVAILABLE},
            )
        current = current.__cause__ or current.__context__
        seen += 1
    return None


def install(app: FastAPI) -> None:
    """Register the handlers that turn every error into problem+json, never a stack trace.

    Validation errors name the first offending field, dotted (`body.metadata.x`).
    """

    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        reads = getattr(request.state, "reads", None)  # a read's source (api.deps.read_state)
        headers = {**(exc.headers or {}), **(reads.header_values() if reads is not None else {})}
        return problem_response(
            exc.status, exc.code, exc.detail, exc.field,
            instance=request.url.path, headers=headers, **exc.extra,
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
        loc = [str(part) for part in first.get("loc", ())]
        if loc and loc[0] in ("body", "query", "path", "header"):
            where, rest = loc[0], loc[1:]
        else:
            where, rest = "body", loc
        if where == "query":
            rest = rest[:1]  # a repeated parameter is named, not its nth value (`type`, not `type.1`)
        field = ".".join(rest) or where
        detail = f"{where} field {field!r}: {first.get('msg')}"
        if first.get("type") == "json_invalid":  # the location is a character offset, not a field
            field = "body"
            error = (first.get("ctx") or {}).get("error", "invalid JSON")
            detail = f"the body is not valid JSON: {error} at character {rest[0] if rest else '?'}"
        return problem_response(
            422, "validation_error", detail, field, instance=request.url.path,
            errors=[
                {"field": "body" if e.get("type") == "json_invalid"
                 else ".".join(str(p) for p in e.get("loc", ())[1:]) or None, "message": e.get("msg")}
                for e in errors[:20]
            ],
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {404: "not_found", 405: "method_not_allowed", 401: "unauthorized", 403: "forbidden"}
        code = codes.get(exc.status_code, f"http_{exc.status_code}")
        detail = exc.detail if isinstance(exc.detail, str) else TITLES.get(exc.status_code, "error")
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"no route {request.method} {request.url.path}"
        return problem_response(
            exc.status_code, code, detail, None, instance=request.url.path, headers=getattr(exc, "headers", None)
        )

    async def _unavailable(request: Request, exc: Exception) -> JSONResponse:
        problem = unavailable(exc)
        if problem is None:  # pragma: no cover - registered for these classes only
            return await _any(request, exc)
        logger.warning("database unavailable on %s %s: %s", request.method, request.url.path, exc)
        return problem_response(problem.status, problem.code, problem.detail, None,
                                instance=request.url.path, headers=problem.headers)

    for error_class in _unavailable_classes():
        app.add_exception_handler(error_class, _unavailable)

    async def _unstorable(request: Request, exc: Exception) -> JSONResponse:
        # A value PostgreSQL cannot take (text with a NUL, an unpaired surrogate, out of range):
        # the input is at fault, so 422, whichever filter or field it came through.
        logger.info("refused a value the database cannot take on %s %s: %s", request.method, request.url.path,
                    type(exc).__name__)
        return problem_response(
            422, "invalid_value",
            "a value cannot be stored or compared: text with a NUL character or an unpaired surrogate, "
            "or a number out of range", None, instance=request.url.path,
        )

    import psycopg

    app.add_exception_handler(psycopg.DataError, _unstorable)
    app.add_exception_handler(UnicodeEncodeError, _unstorable)

    @app.exception_handler(Exception)
    async def _any(request: Request, exc: Exception) -> JSONResponse:
        if unavailable(exc) is not None:  # raised in a middleware, before the routes
            return await _unavailable(request, exc)
        problem = from_error(exc)
        if problem is not None:
            return problem_response(
                problem.status, problem.code, problem.detail, problem.field,
                instance=request.url.path, **problem.extra,
            )
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem_response(
            500, "internal_error", "the server failed to handle this request; it is logged",
            None, instance=request.url.path,
        )
