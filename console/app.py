"""The console's app, mounted at /console inside the API's: sign-in, sign-out, static files, errors.

`install(api_app)` mounts it; its pages are in pages_*.py. It shares the API's process, pool,
store and services, and none of the API's JSON-only rules (forms post url-encoded bodies).
"""

from __future__ import annotations

from fastapi import Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from api.guards import no_unknown_query
from console import pages_audit, pages_operations, pages_overview
from console.auth import PATH, SESSION_COOKIE, SIGN_IN_COOKIE, check_csrf, sign_in, sign_out
from console.web import HERE, LastResort, form_of, install_errors, page, sign_in_page, state_of
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ConsoleSettings(BaseSettings):
    """The console's settings, from the environment (CHRONICLE_CONSOLE_*)."""

    model_config = SettingsConfigDict(env_prefix="CHRONICLE_CONSOLE_", extra="ignore")

    # How long a sign-in lasts; the key is checked on every request regardless.
    session_minutes: int = Field(default=480, ge=1, le=60 * 24 * 30)
    # Send the session cookie only over HTTPS (set it behind a TLS proxy).
    secure_cookie: bool = False


def create_console(parent: FastAPI, settings: ConsoleSettings | None = None) -> FastAPI:
    """The console app; `parent` is the API app whose state it reads."""
    settings = settings or ConsoleSettings()
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None, dependencies=[Depends(no_unknown_query)])
    app.state.parent = parent
    install_errors(app)
    app.add_middleware(LastResort)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    @app.get("/sign-in", response_class=HTMLResponse)
    def sign_in_form(request: Request) -> HTMLResponse:
        """The sign-in form."""
        return sign_in_page(request, None, 200)

    @app.post("/sign-in", response_class=HTMLResponse)
    async def sign_in_post(request: Request) -> Response:
        """Exchange an API key for a session cookie, then go to the page asked for."""
        body = await form_of(request, None, check=False)
        check_csrf(request.cookies.get(SIGN_IN_COOKIE), body)
        signed = sign_in(state_of(request).pool, body.get("api_key", "")[:300], settings.session_minutes)
        if signed is None:
            return sign_in_page(request, "That API key is unknown or revoked.", 401)
        next_path = body.get("next", "")
        if not next_path.startswith("/console/") or "//" in next_path or "\\" in next_path:
            next_path = "/console/"
        response = RedirectResponse(next_path if next_path != "/console/" else _home(signed[0].role), 303)
        response.set_cookie(SESSION_COOKIE, signed[1], max_age=settings.session_minutes * 60, path=PATH,
                            httponly=True, samesite="strict", secure=settings.secure_cookie)
        response.delete_cookie(SIGN_IN_COOKIE, path=PATH)
        return response

    @app.post("/sign-out", response_class=HTMLResponse)
    async def sign_out_post(request: Request) -> Response:
        """End this session."""
        from console.auth import viewer

        seen = viewer(state_of(request).pool, request)
        await form_of(request, seen.csrf_token)
        sign_out(state_of(request).pool, request.cookies.get(SESSION_COOKIE))
        response = RedirectResponse("/console/sign-in", 303)
        response.delete_cookie(SESSION_COOKIE, path=PATH)
        return response

    for module in (pages_overview, pages_audit, pages_operations):
        app.include_router(module.router)

    @app.get("/{rest:path}", response_class=HTMLResponse, include_in_schema=False)
    def unknown(request: Request, rest: str) -> HTMLResponse:
        """Any other path: a readable 404."""
        return page(request, "error.html", 404, title="Not found", detail=f"The console has no page /console/{rest[:200]}.",
                    status=404)

    return app


def _home(role: str) -> str:
    """The first page a role may see: operators the overview, auditors the log, others the documents."""
    return {"operator": "/console/", "admin": "/console/", "auditor": "/console/events"}.get(role, "/console/documents")


def install(api: FastAPI) -> None:
    """Mount the console at /console on the API's app."""
    api.mount(PATH, create_console(api))
