"""/openapi.json as clients generate from it: bearer auth, roles, problem+json errors, headers.

FastAPI describes bodies and parameters from the routes; this adds, once for every route,
what it cannot see: which roles may call an operation, the errors it answers (each a
Problem with its codes and an example), and the headers the API reads and writes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute

from api.commanding import command_context
from api.deps import min_position_param, read_state
from infrastructure.replica import FALLBACK_HEADER, SOURCE_HEADER
from service_layer.keys import PERMISSIONS
from api.problems import PROBLEM_JSON, TITLES, problem_body
from api.schemas import ProblemOut
from infrastructure.log_status import HEAD_HEADER, HELD_BACK_HEADER, SAFE_HEADER

SCHEME = "bearerAuth"
PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
# Resource path segments and the stream or record type their ids name (for `<type>_not_found`).
RESOURCES = {"documents": "document", "agents": "agent", "chains": "chain", "events": "event", "streams": "stream",
             "keys": "key", "projections": "projection", "dead-letters": "dead_letter"}
STREAM_TYPES = ("document", "agent", "chain")


# The optional headers of every command (api/commanding.py COMMAND_HEADERS), in their documented order.
COMMAND_HEADER_NAMES = ("X-Session-Id", "X-Correlation-Id", "X-Causation-Id", "X-Subject-Id", "If-Match")
SUBJECT_HEADER = "the person whose personal fields this command writes"


def _command_header(name: str) -> dict[str, Any]:
    """A command header as a parameter: an optional string (null when absent)."""
    schema: dict[str, Any] = {"anyOf": [{"type": "string"}, {"type": "null"}]}
    if name == "X-Subject-Id":
        schema["description"] = SUBJECT_HEADER
    schema["title"] = name
    param = {"name": name, "in": "header", "required": False, "schema": schema}
    if name == "X-Subject-Id":
        param["description"] = SUBJECT_HEADER
    return param


def _parameters(op: dict[str, Any]) -> list[dict[str, Any]]:
    """An operation's parameter list; a new one goes where FastAPI puts it, before the request body."""
    if "parameters" not in op:
        after = [key for key in op if key not in ("tags", "summary", "description", "operationId", "deprecated")]
        moved = {key: op.pop(key) for key in after}
        op["parameters"] = []
        op.update(moved)
    return op["parameters"]


def _header(description: str, schema_type: str = "string") -> dict[str, Any]:
    return {"description": description, "schema": {"type": schema_type}}


CORRELATION = _header("the request's correlation id: the one sent, or a fresh one; its events carry it")
COMMAND_HEADERS = {
    "ETag": _header('the stream\'s version after the command, strong (e.g. "3"); send it as If-Match'),
    "X-Chronicle-Position": _header("the log position the command reached; reads take it as ?min_position=",
                                    "integer"),
    "Idempotent-Replayed": _header("true when this is the stored response to an earlier request "
                                   "with the same Idempotency-Key"),
}
IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key", "in": "header", "required": False,
    "schema": {"type": "string", "minLength": 1, "maxLength": 200},
    "description": "makes a retry safe: the first response is stored (per API key) and replayed with "
                   "Idempotent-Replayed: true. The same key with a different request - method, path, query, "
                   "body or If-Match - is 422 idempotency_key_reused; while the first still runs, 409.",
}


def _flat(dependant: Dependant) -> list[Dependant]:
    out, stack = [], [dependant]
    while stack:
        current = stack.pop()
        out.append(current)
        stack.extend(current.dependencies)
    return out


def _calls(route: Any) -> set[Any]:
    """The dependencies a route's dependant calls, and those one of them does the work of (`stands_for`)."""
    calls = {dep.call for dep in _flat(route.dependant)}
    return calls.union(*(getattr(call, "stands_for", ()) for call in list(calls)))


def _permission(route: Any) -> str | None:
    for dep in _flat(route.dependant):  # api.deps.require's checks and the command context name theirs
        permission = getattr(dep.call, "permission", None)
        if permission:
            return permission
    return None


def _errors(route: Any, method: str, op: dict[str, Any], permission: str | None) -> dict[int, list[str]]:
    """The problems an operation can answer, by status: its codes."""
    calls = _calls(route)
    names = {p["name"] for p in op.get("parameters", [])}
    command = command_context in calls
    errors: dict[int, list[str]] = {422: ["validation_error", "unknown_query_parameter", "invalid_value"]}
    if permission:
        errors[401] = ["unauthorized"]
        errors[403] = ["forbidden"]
        errors[503] = ["database_unavailable"]
    if "cursor" in names:
        errors[422].append("invalid_cursor")
    if "min_position" in names:
        errors[422].append("min_position_not_issued")
        errors[503].append("projection_behind")
    if any(n.startswith("metadata") for n in names) or "metadata" in route.path:
        errors[422] += ["invalid_metadata_filter", "too_many_filters"]
    parts = [p for p in route.path_format.split("/") if p]
    typed = [RESOURCES[p] for i, p in enumerate(parts) if p in RESOURCES and i + 1 < len(parts)]
    if typed:
        errors[404] = [f"{typed[0]}_not_found"]
        if typed[0] in STREAM_TYPES:
            errors[410] = [f"{typed[0]}_deleted"]
        if "{version}" in parts or "history" in parts or "diff" in parts or "tags" in parts:
            errors[404].append("version_not_found")
    if method in ("post", "put", "patch", "delete"):
        errors[422] += ["invalid_idempotency_key", "idempotency_key_reused"]
        errors[409] = ["idempotency_key_in_flight"]
        if op.get("requestBody"):
            errors[413] = ["body_too_large"]
            errors[415] = ["unsupported_media_type"]
    if command:
        errors[422] += ["invalid_if_match", "invalid_header"]
        errors[409] += ["version_conflict"]
    if method in ("post", "put", "patch", "delete"):
        errors[409].append("the code of the rule the request would break, e.g. duplicate_edge or rebuild_in_progress")
        errors[412] = ["precondition_failed"]
    return errors


def _problem_response(status: int, codes: list[str], route: Any) -> dict[str, Any]:
    code = codes[0]
    example = problem_body(status, code, f"example: {code}", None, route.path_format)
    return {
        "description": f"{TITLES.get(status, 'Error')}: " + ", ".join(f"`{c}`" for c in codes),
        "content": {PROBLEM_JSON: {"schema": PROBLEM_REF, "example": example}},
    }


def _document(route: Any, method: str, op: dict[str, Any]) -> None:
    permission = _permission(route)
    if permission:
        roles = sorted(PERMISSIONS[permission])
        op["security"] = [{SCHEME: []}]
        op["x-chronicle-roles"] = roles
        op["description"] = (op.get("description") or "").rstrip() + (
            f"\n\n**Roles:** {', '.join(roles)} (the `{permission}` permission)."
        )
    else:
        op["security"] = []
    responses = op.setdefault("responses", {})
    for status, codes in _errors(route, method, op, permission).items():
        responses[str(status)] = _problem_response(status, codes, route)
    for status, response in responses.items():  # errors a route declares itself (readyz's 503)
        if status[0] in "45" and not response.get("content"):
            response["content"] = {PROBLEM_JSON: {"schema": PROBLEM_REF}}
    calls = _calls(route)
    for status, response in responses.items():
        if not status.startswith("2"):
            continue
        headers = response.setdefault("headers", {})
        headers["X-Correlation-Id"] = CORRELATION
        if command_context in calls:
            headers.update(COMMAND_HEADERS)
        elif method == "get" and "{" in route.path_format and any(
            p in route.path_format for p in ("/documents/", "/agents/", "/chains/", "/streams/")
        ):
            headers["ETag"] = _header("the stream's version (strong); send it as If-Match on a command")
        if status == "201":
            headers["Location"] = _header("where the created resource is read")
        if read_state in calls:
            headers[SOURCE_HEADER] = _header("with DATABASE_READ_URL set: `replica` or `primary`, which served the read")
            headers[FALLBACK_HEADER] = _header("present when a replica is set but the primary served the read: "
                                               "`replica_unavailable` or `replica_behind`")
        if route.path_format == "/v1/events" and min_position_param in calls:
            headers[HEAD_HEADER] = _header("the log's head position", "integer")
            headers[SAFE_HEADER] = _header("the position this page was read up to (below it no commit is pending)",
                                           "integer")
            headers[HELD_BACK_HEADER] = _header("present only while an open append holds readers below the head: "
                                                "since when (ISO 8601)")
    if command_context in calls:  # it reads these itself; documented where FastAPI would put header parameters
        _parameters(op).extend(_command_header(name) for name in COMMAND_HEADER_NAMES)
    if method in ("post", "put", "patch", "delete") and permission:
        op.setdefault("parameters", []).append(dict(IDEMPOTENCY_KEY))
    for param in op.get("parameters", []):
        if param["name"] == "If-Match":
            param["description"] = ('the stream version the command expects, as its strong ETag ("3"); '
                                    "412 precondition_failed if the stream has moved; a weak ETag never matches")
        elif param["name"] == "X-Session-Id":
            param["description"] = "the caller's session; recorded in the events' metadata"
        elif param["name"] == "X-Correlation-Id":
            param["description"] = "ties this command's events to the caller's request; echoed back"


def build(app: FastAPI, routes: list[BaseRoute] | None = None) -> dict[str, Any]:
    """The OpenAPI document of `app`, with auth, roles, problems and headers.

    `routes`: the app's routes in the order the document lists them (default: as the app matches them).
    """
    routes = app.routes if routes is None else routes
    schema = get_openapi(title=app.title, version=app.version, summary=app.summary, description=app.description,
                         routes=routes, tags=app.openapi_tags)
    components = schema.setdefault("components", {})
    components["securitySchemes"] = {SCHEME: {
        "type": "http", "scheme": "bearer",
        "description": "an API key: `Authorization: Bearer chr_...` (`chronicle keys create`)",
    }}
    problem = ProblemOut.model_json_schema(ref_template="#/components/schemas/{model}")
    components.setdefault("schemas", {})["Problem"] = problem
    for route in app.routes:  # flat: include_router copied each route, its path prefixed
        if not isinstance(route, APIRoute) or not route.include_in_schema:
            continue
        for method in route.methods:
            op = schema["paths"].get(route.path_format, {}).get(method.lower())
            if op is not None:
                _document(route, method.lower(), op)
    for unused in ("HTTPValidationError", "ValidationError"):
        components["schemas"].pop(unused, None)
    return schema


def install(app: FastAPI, listed: Callable[[], list[BaseRoute]] | None = None) -> None:
    """Serve `build(app)` at /openapi.json (built once, on first request); `listed()` gives the
    routes in the order the document lists them, if not the app's."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = build(app, listed() if listed else None)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
