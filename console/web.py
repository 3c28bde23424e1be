"""What every console page shares: templates, the state, the viewer and role checks, forms, errors.

Pages never answer a 500 for bad input: a refused value, an unknown id, a role that may not,
or an ended session each render a readable page with the status the API would answer.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

import jinja2
import psycopg
from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.deps import ChronicleState
from domain.errors import DomainError
from infrastructure.errors import StoreError
from api.problems import Problem, from_error, unavailable
from console.auth import SIGN_IN_COOKIE, CsrfRefused, SignInNeeded, Viewer, check_csrf, new_sign_in_token, viewer

logger = logging.getLogger("chronicle.console")
HERE = Path(__file__).parent
_ENV = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True,
                          undefined=jinja2.ChainableUndefined)
_ENV.filters["pretty"] = lambda value: json.dumps(value, indent=2, sort_keys=True, default=str, ensure_ascii=False)
TEMPLATES = Jinja2Templates(env=_ENV)
# The pages of the navigation bar: (path, title, permission).
NAV = (
    ("/console/", "Overview", "operate"),
    ("/console/events", "Event log", "audit"),
    ("/console/documents", "Documents", "read"),
    ("/console/projections", "Projections", "operate"),
    ("/console/dead-letters", "Dead letters", "operate"),
    ("/console/keys", "Keys", "keys"),
    ("/console/integrity", "Integrity", "audit"),
)


def state_of(request: Request) -> ChronicleState:
    """The API's running state (the console is mounted inside the API's app)."""
    return request.app.state.parent.state.chronicle


def need(permission: str) -> Any:
    """A dependency: the signed-in viewer, whose key's role must hold `permission` (403 otherwise),
    exactly as the API's `require`."""

    def check(request: Request) -> Viewer:
        seen = viewer(state_of(request).pool, request)
        if not seen.key.allows(permission):
            raise Problem(403, "forbidden",
                          f"a {seen.key.role} key may not do this (it needs the {permission} permission)")
        request.state.viewer = seen
        return seen

    return check


async def form_of(request: Request, expected_csrf: str | None, *, check: bool = True) -> dict[str, str]:
    """The posted form's fields (first value each), after its CSRF token is checked (CsrfRefused)."""
    body = (await request.body()).decode("utf-8", "replace")
    form = {k: v[0] for k, v in parse_qs(body, keep_blank_values=True).items()}
    if check:
        check_csrf(expected_csrf, form)
    return form


def page(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    """Render a page with the navigation the viewer may use."""
    seen: Viewer | None = getattr(request.state, "viewer", None)
    nav = [(path, title) for path, title, permission in NAV if seen and seen.key.allows(permission)]
    return TEMPLATES.TemplateResponse(request, template, {"viewer": seen, "nav": nav, **context},
                                      status_code=status_code, headers={"Cache-Control": "no-store"})


def query(**params: Any) -> str:
    """A query string of the given non-empty parameters (lists repeat)."""
    return urlencode([(k, v) for k, vs in params.items() for v in (vs if isinstance(vs, list) else [vs])
                      if v not in (None, "")])


def sign_in_page(request: Request, message: str | None, status_code: int, next_path: str = "/console/") -> HTMLResponse:
    """The sign-in form, with a fresh double-submit token in its cookie."""
    token = new_sign_in_token()
    response = page(request, "sign_in.html", status_code, message=message, csrf_token=token, next_path=next_path)
    response.set_cookie(SIGN_IN_COOKIE, token, max_age=3600, path="/console", httponly=True, samesite="strict")
    return response


def error_page(request: Request, status_code: int, title: str, detail: str) -> HTMLResponse:
    """A readable error page with this status."""
    return page(request, "error.html", status_code, title=title, detail=detail, status=status_code)


def install_errors(app: Any) -> None:
    """Every error a console route can meet, as a page: sign-in (401), CSRF (403), problems, the rest."""
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException

    @app.exception_handler(SignInNeeded)
    async def _sign_in(request: Request, exc: SignInNeeded) -> HTMLResponse:
        path = request.url.path if request.method == "GET" else "/console/"
        return sign_in_page(request, exc.reason, 401, path)

    @app.exception_handler(CsrfRefused)
    async def _csrf(request: Request, exc: CsrfRefused) -> HTMLResponse:
        return error_page(request, 403, "Form refused",
                          "This form came without its CSRF token, or with another session's. Reload the page and try again.")

    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> HTMLResponse:
        titles = {403: "Not allowed", 404: "Not found", 409: "Conflict", 422: "Not a valid request"}
        return error_page(request, exc.status, titles.get(exc.status, "Refused"), exc.detail)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> HTMLResponse:
        lines = [f"{'.'.join(str(p) for p in e.get('loc', ())[1:]) or 'request'}: {e.get('msg', 'invalid')}"
                 for e in exc.errors()]
        return error_page(request, 422, "Not a valid request", "; ".join(lines)[:2000])

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> HTMLResponse:
        return error_page(request, exc.status_code, "Not found" if exc.status_code == 404 else "Refused",
                          str(exc.detail))

    for error_class in (ValueError, LookupError, DomainError, StoreError):
        app.add_exception_handler(error_class, _refused)


async def _refused(request: Request, exc: Exception) -> HTMLResponse:
    """An error with a code (domain, store, operations) as a page with the API's status; else a 500 page."""
    if isinstance(exc, (psycopg.DataError, UnicodeEncodeError)):  # as the API: the input is at fault
        return error_page(request, 422, "Not a valid request", "A value cannot be stored or compared: text with a"
                          " NUL character or an unpaired surrogate, or a number out of range.")
    problem = from_error(exc) or unavailable(exc)
    if problem is not None:
        return error_page(request, problem.status, "Refused" if problem.status < 500 else "Unavailable",
                          problem.detail)
    logger.exception("console error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_page(request, 500, "Server error", "The server failed to show this page; it is logged.")


class LastResort:
    """Outermost in the console: any error no handler took becomes a page, never a dropped connection."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def watch(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except Exception as exc:
            if started or scope["type"] != "http":
                raise
            await (await _refused(Request(scope), exc))(scope, receive, send)
