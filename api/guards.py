"""Request checks every route gets, once: no unknown query parameter, JSON bodies only.

A misspelt filter (`?namspace=`) or one a route does not have (`/v1/events?actor_id=`) would
otherwise be ignored and answer everything; a body of another content type would be parsed
as JSON regardless. Both are refused before anything runs, naming what was sent.
"""

from __future__ import annotations

from fastapi import Request
from fastapi.dependencies.models import Dependant
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from api.problems import Problem, problem_response
from api.read_support import METADATA_PREFIX, metadata_filters

MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_DECLARED: dict[int, tuple[frozenset[str], bool]] = {}


def _declared(dependant: Dependant) -> tuple[frozenset[str], bool]:
    """The query parameter names a route declares (through every dependency), and whether it
    takes `metadata.<field>` filters."""
    names: set[str] = set()
    dynamic = False
    stack = [dependant]
    while stack:
        current = stack.pop()
        names.update(param.alias for param in current.query_params)
        dynamic = dynamic or current.call is metadata_filters
        stack.extend(current.dependencies)
    return frozenset(names), dynamic


async def no_unknown_query(request: Request) -> None:
    """Refuse a query parameter the matched route does not declare: 422 `unknown_query_parameter`."""
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if dependant is None:
        return
    known = _DECLARED.get(id(route))
    if known is None:
        known = _DECLARED[id(route)] = _declared(dependant)
    names, dynamic = known
    for name in request.query_params.keys():
        if name in names or (dynamic and name.startswith(METADATA_PREFIX)):
            continue
        allowed = ", ".join(sorted(names | ({f"{METADATA_PREFIX}<field>"} if dynamic else set()))) or "none"
        raise Problem(422, "unknown_query_parameter",
                      f"this route has no query parameter {name[:100]!r} (it takes: {allowed})", field=name[:100])


def _is_json(content_type: str) -> bool:
    media_type = content_type.split(";", 1)[0].strip().lower()
    return media_type == "application/json" or (media_type.startswith("application/") and media_type.endswith("+json"))


class JsonBodyMiddleware:
    """A write with a body must say `Content-Type: application/json`: else 415, before any work."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # The console (/console) posts HTML forms; it parses and checks them itself.
        if scope["type"] == "http" and scope["method"] in MUTATING and not scope["path"].startswith("/console/"):
            headers = Headers(scope=scope)
            length = headers.get("content-length")
            has_body = (length is not None and length.strip() not in ("", "0")) or "transfer-encoding" in headers
            content_type = headers.get("content-type")
            if has_body and (content_type is None or not _is_json(content_type)):
                sent = "no Content-Type" if content_type is None else f"Content-Type {content_type[:100]!r}"
                await problem_response(
                    415, "unsupported_media_type",
                    f"request bodies are JSON: send Content-Type: application/json (got {sent})", "Content-Type",
                    instance=scope["path"], headers={"Accept-Post": "application/json"},
                )(scope, receive, send)
                return
        await self.app(scope, receive, send)
