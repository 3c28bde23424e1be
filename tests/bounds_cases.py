"""Every stored field of every command, with its bound (domain.bounds), for the bounds tests.

A case is one field and one way to come near its bound: `values(case, inside)` draws values
just inside or just outside it. `request` makes the HTTP request that sends a value, and
`command` the same command for Workspace.handle; `stored` is the SQL that reads the value
back from its snapshot row once projected (None where a rule, not a row, answers).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from hypothesis import HealthCheck, assume, settings
from hypothesis import strategies as st

from domain import bounds as b
from domain import commands as c

# The red team's input: a 320-digit integer.
HUGE = 10**319
# A few examples per case: the cases, not the examples, cover the bounds.
EXAMPLES = settings(max_examples=3, deadline=None, database=None, suppress_health_check=list(HealthCheck))


@dataclass(frozen=True)
class Case:
    command: str
    field: str  # as the API names it (and the problem's `field`)
    kind: str  # int, chars, ident, model, bytes, json, list, depth, nul
    limit: int = 0
    stored: str | None = None  # SQL: %(stream)s, %(key)s, %(value)s, %(position)s; returns v
    low: int = 0  # an int field's lowest value
    domain_field: str | None = None  # the domain command's name for the field, if another

    @property
    def id(self) -> str:
        return f"{self.command}.{self.field}.{self.kind}"


def _row(table: str, column: str, key: str) -> str:
    return f"SELECT {column} AS v FROM {table} WHERE {key} = %(stream)s AND last_position >= %(position)s"


CHAIN = lambda col: _row("chain", col, "chain_id")  # noqa: E731
DOC = lambda col: _row("document", col, "document_id")  # noqa: E731
AGENT = lambda col: _row("agent", col, "agent_id")  # noqa: E731
VERSION = ("SELECT {} AS v FROM document_version WHERE document_id = %(stream)s AND last_position >= %(position)s"
           " ORDER BY version DESC LIMIT 1")
NODE = ("SELECT nodes -> %(key)s -> 'position' AS v FROM chain WHERE chain_id = %(stream)s"
        " AND last_position >= %(position)s")
NODE_ID = ("SELECT %(key)s::text AS v FROM chain WHERE chain_id = %(stream)s AND nodes ? %(key)s"
           " AND last_position >= %(position)s")
EDGE = "SELECT {} AS v FROM edge WHERE chain_id = %(stream)s AND edge_id = %(key)s AND last_position >= %(position)s"
EXECUTION = ("SELECT {} AS v FROM agent_execution WHERE agent_id = %(stream)s AND execution_id = %(key)s"
             " AND last_position >= %(position)s")
TAG = ("SELECT tag AS v FROM active_tag WHERE document_id = %(stream)s AND tag = %(key)s"
       " AND last_position >= %(position)s")


def _text_cases(command: str, field: str, kind: str, limit: int, stored: str | None, **kw: Any) -> list[Case]:
    return [Case(command, field, kind, limit, stored, **kw), Case(command, field, "nul", 0, None, **kw)]


def _json_cases(command: str, field: str, limit: int, stored: str | None, kind: str = "json") -> list[Case]:
    return [Case(command, field, kind, limit, stored), Case(command, field, "depth", b.MAX_JSON_DEPTH, stored),
            Case(command, field, "nul", 0, None)]


CASES: list[Case] = [
    # chains
    *_text_cases("create_chain", "name", "chars", b.MAX_NAME_CHARS, CHAIN("name")),
    *_text_cases("create_chain", "description", "bytes", b.MAX_DESCRIPTION_CHARS, CHAIN("description")),
    *_json_cases("create_chain", "metadata", b.MAX_METADATA_BYTES, CHAIN("metadata")),
    *_text_cases("update_chain", "name", "chars", b.MAX_NAME_CHARS, CHAIN("name")),
    *_json_cases("update_chain", "metadata", b.MAX_METADATA_BYTES, CHAIN("metadata")),
    *_json_cases("update_canvas", "canvas_state", b.MAX_CANVAS_BYTES, CHAIN("canvas_state")),
    *_json_cases("update_canvas", "viewport", b.MAX_VIEWPORT_BYTES, CHAIN("viewport")),
    *_text_cases("add_node", "node_id", "ident", b.MAX_IDENTIFIER_CHARS, NODE_ID),
    *_json_cases("add_node", "position", b.MAX_POSITION_BYTES, NODE),
    Case("add_node", "ref_id", "ident", b.MAX_IDENTIFIER_CHARS),
    Case("add_node", "kind", "ident", b.MAX_IDENTIFIER_CHARS),
    *_text_cases("create_edge", "edge_id", "ident", b.MAX_IDENTIFIER_CHARS, EDGE.format("edge_id")),
    *_text_cases("create_edge", "type", "ident", b.MAX_IDENTIFIER_CHARS, EDGE.format("type")),
    Case("create_edge", "source_id", "ident", b.MAX_IDENTIFIER_CHARS),
    Case("create_edge", "target_id", "nul"),
    *_json_cases("create_edge", "metadata", b.MAX_EDGE_METADATA_BYTES, EDGE.format("metadata")),
    *_json_cases("update_edge", "metadata", b.MAX_EDGE_METADATA_BYTES, EDGE.format("metadata")),
    # documents
    *_text_cases("create_document", "namespace", "ident", b.MAX_IDENTIFIER_CHARS, DOC("namespace")),
    *_text_cases("create_document", "type", "ident", b.MAX_IDENTIFIER_CHARS, DOC("document_type"),
                 domain_field="document_type"),
    *_text_cases("create_document", "title", "chars", b.MAX_TITLE_CHARS, DOC("title")),
    *_text_cases("create_document", "content", "bytes", b.MAX_CONTENT_BYTES, DOC("content")),
    *_json_cases("create_document", "body", b.MAX_BODY_BYTES, DOC("body")),
    *_json_cases("create_document", "metadata", b.MAX_METADATA_BYTES, DOC("metadata")),
    *_text_cases("update_document", "title", "chars", b.MAX_TITLE_CHARS, VERSION.format("title")),
    *_text_cases("update_document", "content", "bytes", b.MAX_CONTENT_BYTES, DOC("content")),
    *_text_cases("update_document", "change_description", "bytes", b.MAX_CHANGE_DESCRIPTION_CHARS,
                 VERSION.format("change_description")),
    *_json_cases("update_document", "metadata", b.MAX_METADATA_BYTES, VERSION.format("metadata")),
    *_text_cases("tag_document", "tag", "ident", b.MAX_IDENTIFIER_CHARS, TAG),
    Case("tag_document", "version", "int", b.INT4_MAX, None, low=1),  # a version must exist: 404 inside
    # agents
    *_text_cases("create_agent", "name", "chars", b.MAX_NAME_CHARS, AGENT("name")),
    *_text_cases("create_agent", "prompt", "bytes", b.MAX_PROMPT_BYTES, AGENT("prompt")),
    *_text_cases("create_agent", "model", "model", b.MAX_MODEL_CHARS, AGENT("model")),
    *_json_cases("create_agent", "tools", b.MAX_TOOLS_BYTES, AGENT("tools"), kind="list"),
    *_json_cases("create_agent", "metadata", b.MAX_METADATA_BYTES, AGENT("metadata")),
    *_text_cases("update_agent", "prompt", "bytes", b.MAX_PROMPT_BYTES, AGENT("prompt")),
    *_json_cases("update_agent", "metadata", b.MAX_METADATA_BYTES, AGENT("metadata")),
    *_text_cases("record_execution", "execution_id", "ident", b.MAX_IDENTIFIER_CHARS, EXECUTION.format("execution_id")),
    *_json_cases("record_execution", "input", b.MAX_EXECUTION_IO_BYTES, EXECUTION.format("input")),
    *_json_cases("record_execution", "output", b.MAX_EXECUTION_IO_BYTES, EXECUTION.format("output")),
    *_json_cases("record_execution", "metadata", b.MAX_METADATA_BYTES, EXECUTION.format("metadata")),
    Case("record_execution", "duration_ms", "int", b.EXACT_INT_MAX, EXECUTION.format("duration_ms")),
    Case("record_execution", "tokens", "int", b.EXACT_INT_MAX, EXECUTION.format("tokens")),
]
# Fields a rule (a pattern, an existing node) refuses before their bound: only outside values are sent.
OUTSIDE_ONLY = {("add_node", "ref_id"), ("add_node", "kind"), ("create_edge", "source_id"),
                ("create_edge", "target_id")}
INSIDE = [k for k in CASES if k.kind != "nul" and (k.command, k.field) not in OUTSIDE_ONLY]
# Fields whose value names a new element: a repeated value would break a rule (duplicate id).
ELEMENT_FIELDS = {("add_node", "node_id"), ("create_edge", "edge_id"), ("create_edge", "type"),
                  ("record_execution", "execution_id"), ("tag_document", "tag")}


# -- values near a bound -------------------------------------------------------------------------

def _sized_text(size: int, wide: int, unit: str) -> str:
    """Text of exactly `size` UTF-8 bytes: up to `wide` multi-byte characters, then ASCII."""
    width = len(unit.encode())
    wide = min(wide, size // width)
    return unit * wide + "x" * (size - wide * width)


def _sized_object(size: int, as_list: bool) -> Any:
    """A JSON object {"k": "xx..."} (or list ["xx..."]) of exactly `size` bytes, compact."""
    return ["x" * (size - 4)] if as_list else {"k": "x" * (size - 8)}


def _nested(depth: int, as_list: bool) -> Any:
    """Arrays or objects `depth` deep."""
    value: Any = [] if as_list else {}
    for _ in range(depth - 1):
        value = [value] if as_list else {"a": value}
    return value


def values(case: Case, inside: bool) -> st.SearchStrategy[Any]:
    """Values just inside (or just outside) the case's bound."""
    limit, kind = case.limit, case.kind
    if kind == "int":
        if inside:
            return st.integers(max(case.low, limit - 3), limit) | st.integers(case.low, case.low + 3)
        return st.integers(limit + 1, limit + 3) | st.sampled_from([case.low - 1, HUGE])
    if kind == "nul":
        if case.field in ("metadata", "body", "canvas_state", "viewport", "position", "input", "output"):
            return st.sampled_from([{"a\x00": 1}, {"k": "nul\x00"}])
        if case.field == "tools":
            return st.just(["nul\x00"])
        return st.sampled_from(["a\x00", "ab\x00cd"])
    if kind in ("json", "list"):
        sizes = st.integers(limit - 3, limit) if inside else st.integers(limit + 1, limit + 3)
        return sizes.map(lambda n: _sized_object(n, kind == "list"))
    if kind == "depth":
        depth = limit if inside else limit + 1
        # A tool is a name or an object (a rule): the tools list holds one nested object.
        return st.just([_nested(depth - 1, False)] if case.field == "tools" else _nested(depth, False))
    lengths = st.integers(limit - 2, limit) if inside else st.integers(limit + 1, limit + 2)
    if kind == "bytes":
        return st.tuples(lengths, st.integers(0, 3), st.sampled_from(["é", "漢", "😀"])).map(lambda t: _sized_text(*t))
    alphabet = {"chars": "abcXYZ é漢😀-", "ident": "abc019_.:-", "model": "abcXYZ019_.:/@-"}[kind]
    return st.tuples(lengths, st.text(alphabet, min_size=1, max_size=8)).map(
        lambda t: ("a" + t[1] * t[0])[: t[0]])


# -- the same command over HTTP and for Workspace.handle --------------------------------------------

@dataclass
class Streams:
    """The streams the commands aim at: a chain with nodes a, b and an edge e; documents; an agent."""

    chain: str
    doc: str
    body_doc: str
    agent: str
    counter: itertools.count

    def fresh(self, prefix: str) -> str:
        return f"{prefix}{next(self.counter)}"


def inside_value(data: st.DataObject, case: Case, seen: set[tuple[str, Any]]) -> Any:
    """A value just inside the case's bound, drawn from `data`; for an element field (a key
    that must be new in its stream) never one already in `seen`, which records it."""
    value = data.draw(values(case, inside=True), label="value")
    if (case.command, case.field) in ELEMENT_FIELDS:
        assume((case.id, value) not in seen)
        seen.add((case.id, value))
    return value


def request(s: Streams, case: Case, value: Any) -> tuple[str, str, dict[str, Any], str | None, str]:
    """(method, path, JSON body, key, stream) sending `value` as the case's field.

    `key` names the element the row is found by (node, edge, execution, tag); `stream` is
    the stream aimed at ("" for a create: the response names it).
    """
    key = None
    field = case.field
    match case.command:
        case "create_chain":
            return "POST", "/v1/chains", {"name": "c", field: value}, key, ""
        case "update_chain":
            return "PATCH", f"/v1/chains/{s.chain}", {field: value}, key, s.chain
        case "update_canvas":
            return "PUT", f"/v1/chains/{s.chain}/canvas", {"canvas_state": {}, "viewport": {}, field: value}, key, s.chain
        case "add_node":
            key = value if field == "node_id" else s.fresh("n")
            body = {"node_id": key, "kind": "document", "ref_id": s.doc, field: value}
            return "POST", f"/v1/chains/{s.chain}/nodes", body, key, s.chain
        case "create_edge":
            key = value if field == "edge_id" else s.fresh("e")
            body = {"edge_id": key, "source_id": "a", "target_id": "b", "type": s.fresh("t"), field: value}
            return "POST", f"/v1/chains/{s.chain}/edges", body, key, s.chain
        case "update_edge":
            return "PATCH", f"/v1/chains/{s.chain}/edges/e", {field: value}, "e", s.chain
        case "create_document":
            body = {"namespace": "bounds", "type": "t", "title": "T", field: value}
            if field != "body":
                body.setdefault("content", "c")
            return "POST", "/v1/documents", body, key, ""
        case "update_document":  # with new content, so that every example is a new version
            return "PATCH", f"/v1/documents/{s.doc}", {"content": s.fresh("v"), field: value}, key, s.doc
        case "tag_document":
            tag, version = (value, 1) if field == "tag" else ("t", value)
            return "PUT", f"/v1/documents/{s.doc}/tags/{quote(str(tag), safe='')}", {"version": version}, tag, s.doc
        case "create_agent":
            return "POST", "/v1/agents", {"name": "a", "prompt": "p", "model": "m", field: value}, key, ""
        case "update_agent":
            return "PATCH", f"/v1/agents/{s.agent}", {field: value}, key, s.agent
        case "record_execution":
            key = value if field == "execution_id" else s.fresh("x")
            body = {"execution_id": key, "duration_ms": 1, "tokens": 1, field: value}
            return "POST", f"/v1/agents/{s.agent}/executions", body, key, s.agent
    raise AssertionError(case.command)


def command(s: Streams, case: Case, value: Any) -> c.Command:
    """The domain command carrying `value` as the case's field (built here: it may raise DomainError)."""
    method, path, body, key, stream = request(s, case, value)
    fields = dict(body)
    if case.command == "create_document":
        fields["document_type"] = fields.pop("type")
    elif case.command in ("update_chain", "update_canvas", "add_node", "create_edge"):
        fields["chain_id"] = s.chain
    elif case.command == "update_edge":
        fields.update(chain_id=s.chain, edge_id="e")
    elif case.command == "update_document":
        fields["document_id"] = s.doc
    elif case.command == "tag_document":
        fields.update(document_id=s.doc, tag=key)
    elif case.command in ("update_agent", "record_execution"):
        fields["agent_id"] = s.agent
    # The HTTP command name in snake case names the domain command class: add_node -> AddNode.
    return getattr(c, "".join(word.capitalize() for word in case.command.split("_")))(**fields)
