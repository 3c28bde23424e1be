"""Reads from the snapshot tables the projection workers keep: documents, agents, chains.

Every read accepts `?min_position=` (read-your-writes). Lists are newest first with keyset
cursors. A resource's ETag is the stream version of the last event that shaped its row.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Response
from pydantic import StringConstraints

from api.deps import ChronicleState, Reader, chronicle, decode_cursor, etag, min_position_for, page_of, page_size
from api.problems import Problem
from api.read_support import _fetch_all, _fetch_one, _json, _metadata_sql, any_of, metadata_filters, missing
from api.schemas import (
    ExactRoute,
    AgentOut, AgentPage, CanvasOut, ChainOut, ChainPage, DocumentOut, DocumentPage, EdgesOut, ExecutionPage, TagsOut,
    VersionOut, VersionPage,
)

router = APIRouter(prefix="/v1", tags=["reads"], route_class=ExactRoute)
ID = r"^[A-Za-z0-9][A-Za-z0-9._:@+=-]{0,199}$"
IDENT = r"^[a-z0-9][a-z0-9_.:-]{0,63}$"


# -- documents -------------------------------------------------------------------------------

DOC_COLUMNS = (
    "d.document_id, d.namespace, d.document_type AS type, d.title, d.content, d.body, d.metadata, d.version AS document_version,"
    " d.session_id, d.created_by, d.created_by_type, d.created_at, d.updated_at, d.created_position,"
    " d.last_event_id, d.last_version AS stream_version, d.last_position"
)


IdentValue = Annotated[str, StringConstraints(pattern=IDENT)]
MAX_FILTER_VALUES = 50


@router.get("/documents", summary="Documents, newest first, by namespace, type, tag, session, metadata")
def list_documents(
    state: ChronicleState = Depends(chronicle),
    _: Any = Reader,
    namespace: list[IdentValue] | None = Query(None, max_length=MAX_FILTER_VALUES, description="repeatable: any of them"),
    type: list[IdentValue] | None = Query(None, max_length=MAX_FILTER_VALUES, description="document type, repeatable"),
    tag: list[IdentValue] | None = Query(
        None, max_length=MAX_FILTER_VALUES,
        description="only tagged documents, at the tagged version; repeatable (the first tag given that a document carries)"),
    session: str | None = Query(None, max_length=200, description=(
        "session id that created the document (every session that touched it: /v1/sessions/{id}/documents)")),
    metadata: list[tuple[str, str]] = Depends(metadata_filters),
    cursor: str | None = Query(None, max_length=200),
    limit: int = Depends(page_size),
    _wait: int | None = Depends(min_position_for("documents")),
) -> DocumentPage:
    """Live documents matching every filter (any of a repeated one's values), newest first, a page at a time.

    With `?tag=`, each document comes once, at the version the first given tag it carries points to.
    """
    after = decode_cursor(cursor, (int,))
    sql, params = documents_sql(*(list(dict.fromkeys(v or ())) for v in (namespace, type, tag)), session, metadata,
                                after[0] if after else None, limit + 1)
    rows, next_cursor = page_of(_fetch_all(state, sql, params), limit, "created_position")
    return {"documents": [_json(r) for r in rows], "next_cursor": next_cursor}


def documents_sql(namespaces: list[str], types: list[str], tags: list[str], session: str | None,
                  metadata: list[tuple[str, str]], before: int | None, size: int) -> tuple[str, list[Any]]:
    """The document list query: newest first from an index that gives the order.

    namespace -> document_namespace_idx, namespace and type -> document_ns_type_idx, type ->
    document_type_idx, session -> document_session_idx, tag -> active_tag_order_idx, a type and
    a metadata field -> the operator's index (`chronicle indexes add`), if there is one.
    """
    clauses: list[str] = []
    params: list[Any] = []
    any_of("d.namespace", namespaces, clauses, params)
    if len(types) == 1:
        # As a literal (IDENT allows no quote): an operator's index for one type is partial on it,
        # and a prepared plan matches it only against the literal.
        clauses.append(f"d.document_type = '{types[0]}'")
    else:
        any_of("d.document_type", types, clauses, params)
    if session is not None:
        clauses.append("d.session_id = %s")
        params.append(session)
    _metadata_sql("d.metadata", metadata, clauses, params)
    if tags:
        return _tagged_sql(tags, clauses, params, before, size)
    if before is not None:
        clauses.append("d.created_position < %s")
        params.append(before)
    where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
    return f"SELECT {DOC_COLUMNS} FROM document d {where} ORDER BY d.created_position DESC LIMIT %s", [*params, size]


# One tag's documents at their tagged version, newest first: active_tag_order_idx gives the
# order, so a page reads at most a page of tags (plus those the other filters pass over).
_TAGGED = (
    "(SELECT d.document_id, d.namespace, d.document_type AS type, v.title, b.content, b.body, v.metadata,"
    " v.version AS document_version, d.session_id, d.created_by, d.created_by_type, d.created_at,"
    " v.created_at AS updated_at, d.created_position, d.last_event_id, d.last_version AS stream_version,"
    " d.last_position, t.tag, {rank} AS tag_rank"
    " FROM active_tag t JOIN document d ON d.document_id = t.document_id"
    " JOIN document_version v ON v.document_id = t.document_id AND v.version = t.document_version"
    " LEFT JOIN document_body b ON b.body_hash = v.body_hash"
    " WHERE t.tag = %s AND t.created_position < %s{filters} ORDER BY t.created_position DESC LIMIT %s)"
)


def _tagged_sql(tags: list[str], clauses: list[str], params: list[Any], before: int | None,
                size: int) -> tuple[str, list[Any]]:
    """The documents carrying any of `tags`, each once at the first given tag's version.

    One ordered, limited read per tag, merged: no tag's documents are all joined and sorted.
    """
    filters = "".join(f" AND {c}" for c in clauses)
    parts, merged = [], []
    for rank, tag in enumerate(tags):
        parts.append(_TAGGED.format(rank=rank, filters=filters))
        merged.extend([tag, before if before is not None else 2**63 - 1, *params, size])
    sql = ("SELECT DISTINCT ON (p.created_position) p.* FROM (" + " UNION ALL ".join(parts) + ") p"
           " ORDER BY p.created_position DESC, p.tag_rank LIMIT %s")
    return sql, [*merged, size]


@router.get("/documents/{document_id}", summary="One document")
def get_document(
    response: Response,
    document_id: str = Path(..., pattern=ID),
    state: ChronicleState = Depends(chronicle),
    _: Any = Reader,
    _wait: int | None = Depends(min_position_for("documents")),
) -> DocumentOut:
    """The current document with its live tags; its stream version is the ETag. 404 if none."""
    row = _fetch_one(state, f"SELECT {DOC_COLUMNS} FROM document d WHERE d.document_id = %s", (document_id,))
    if row is None:
        missing(state, "document", document_id)
    tags = _fetch_all(
        state, "SELECT tag, document_version FROM active_tag WHERE document_id = %s ORDER BY tag", (document_id,)
    )
    response.headers["ETag"] = etag(row["stream_version"])
    return {**_json(row), "tags": {t["tag"]: t["document_version"] for t in tags}}


@router.get("/documents/{document_id}/versions", summary="A document's versions")
def list_versions(
    document_id: str = Path(..., pattern=ID),
    state: ChronicleState = Depends(chronicle),
    _: Any = Reader,
    cursor: str | None = Query(None, max_length=200),
    limit: int = Depends(page_size),
    _wait: int | None = Depends(min_position_for("documents")),
) -> VersionPage:
    """Version headers, oldest first, without bodies; they outlive a deleted document."""
    after = (decode_cursor(cursor, (int,)) or (0,))[0]
    rows = _fetch_all(
        state,
        "SELECT document_id, version AS document_version, namespace, document_type AS type, title, metadata, change_description,"
        " session_id, created_by, created_by_type, created_at, last_version AS stream_version, last_position"
        " FROM document_version WHERE document_id = %s AND version > %s ORDER BY version LIMIT %s",
        (document_id, after, limit + 1),
    )
    if not rows and after == 0:
        raise Problem(404, "document_not_found", f"no document {document_id!r}", field="document_id")
    rows, next_cursor = page_of(rows, limit, "document_version")
    return {"document_id": document_id, "versions": [_json(r) for r in rows], "next_cursor": next_cursor}


@router.get("/documents/{document_id}/versions/{version}", summary="One version of a document, with its body")
def get_version(
    document_id: str = Path(..., pattern=ID),
    version: int = Path(..., ge=1),
    state: ChronicleState = Depends(chronicle),
    _: Any = Reader,
    _wait: int | None = Depends(min_position_for("documents")),
) -> VersionOut:
    """A document as it was at a content version. 404 if there is no such version."""
    row = _fetch_one(
        state,
        "SELECT v.document_id, v.version AS document_version, v.namespace, v.document_type AS type, v.title, b.content, b.body,"
        " v.metadata, v.change_description, v.session_id, v.created_by, v.created_by_type, v.created_at,"
        " v.last_version AS stream_version, v.last_position, b.body_hash IS NULL AS body_pruned"
        " FROM document_version v LEFT JOIN document_body b ON b.body_hash = v.body_hash"
        " WHERE v.document_id = %s AND v.version = %s",
        (document_id, version),
    )
    if row is None:
        raise Problem(404, "version_not_found", f"document {document_id!r} has no version {version}", field="version")
    if row.pop("body_pruned"):
        # Retention removed this body from the read model (projections/retention.py); the log has it.
        at = state.service.state_at(document_id, version=row["stream_version"]).state
        row["content"], row["body"] = at.get("content"), at.get("body")
    return _json(row)


@router.get("/documents/{document_id}/tags", summary="A document's live tags and their history")
def document_tags(
    document_id: str = Path(..., pattern=ID),
    state: ChronicleState = Depends(chronicle),
    _: Any = Reader,
    tag: str | None = Query(None, pattern=IDENT, description="only this tag's history"),
    _wait: int | None = Depends(min_position_for("documents")),
) -> TagsOut:
    """Where each tag points now, and every move of the document's tags, oldest first."""
    active = _fetch_all(
        state, "SELECT tag, document_version, updated_at, updated_by FROM active_tag WHERE document_id = %s"
        " ORDER BY tag", (document_id,),
    )
    history = _fetch_all(
        state,
        "SELECT event_id, tag, document_version, previous_version, operation, created_at, created_by,"
        " created_by_type, session_id, last_version AS stream_version, last_position FROM tag_event"
        " WHERE document_id = %s AND (%s::text IS NULL OR tag = %s::text) ORDER BY last_position LIMIT 1000",
        (document_id, tag, tag),
    )
    return {
        "document_id": document_id,
        "tags": [_json(r) for r in active],
        "history": [{**_json(r), "event_id": str(r["event_id"])} for r in history],
    }


# -- agents ----------------------------------------------------------------------------------

AGENT_COLUMNS = (
    "agent_id, name, prompt, model, tools, metadata, created_at, updated_at, last_event_id, last_version AS stream_version,"
    " last_position"
)


@router.get("/agents", summary="Agents, newest first")
def list_agents(
    state: ChronicleState = Depends(chronicle),
    _: Any = Reader,
    name: str | None = Query(None, max_length=200),
    metadata: list[tuple[str, str]] = Depends(metadata_filters),
    cursor: str | None = Query(None, max_length=200),
    limit: int = Depends(page_size),
    _wait: int | None = Depends(min_position_for("agents")),
) -> AgentPage:
    """Live agents, most recently changed first."""
    return _list_snapshots(state, "agents", AGENT_COLUMNS, "agent", name, metadata, cursor, limit)


@router.get("/agents/{agent_id}", summary="One agent")
def get_agent(
    response: Response,
    agent_id: str = Path(..., pattern=ID),
    state: ChronicleState = Depends(chronicle),
    _: Any = Reader,
    _wait: int | None = Depends(min_position_for("agents")),
) -> AgentOut:
    """The current agent; its stream version is the ETag. 404 if none."""
    row = _fetch_one(state, f"SELECT {AGENT_COLUMNS} FROM agent WHERE agent_id = %s", (agent_id,))
    if row is None:
        missing(state, "agent", agent_id)
    response.headers["ETag"] = etag(row["stream_version"])
    return _json(row)


@router.get("/agents/{agent_id}/executions", summary="An agent's executions, newest first")
def list_executions(
    agent_id: str = Path(..., pattern=ID),
    state: ChronicleState = Depends(chronicle),
    _: Any = Reader,
    cursor: str | None = Query(None, max_length=200),
    limit: int = Depends(page_size),
    _wait: int | None = Depends(min_position_for("agents")),
) -> ExecutionPage:
    """Executions of one agent, newest first; they outlive a deleted agent."""
    after = decode_cursor(cursor, (int,))
    rows = _fetch_all(
        state,
        "SELECT agent_id, execution_id, input, output, duration_ms, tokens, metadata, session_id, created_at,"
        " last_event_id, last_version AS stream_version, last_position FROM agent_execution"
        " WHERE agent_id = %s AND (%s::bigint IS NULL OR last_position < %s::bigint)"
        " ORDER BY last_position DESC LIMIT %s",
        (agent_id, after[0] if after else None, after[0] if after else None, limit + 1),
    )
    rows, next_cursor = page_of(rows, limit, "last_position")
    return {"agent_id": agent_id, "executions": [_json(r) for r in rows], "next_cursor": next_cursor}


# -- chains ----------------------------------------------------------------------------------

CHAIN_COLUMNS = (
    "chain_id, name, description, metadata, canvas_state, viewport, nodes, created_at, updated_at,"
    " last_event_id, last_version AS stream_version, last_position"
)
EDGE_COLUMNS = (
    "edge_id, source_id, target_id, type, metadata, created_at, updated_at, last_version AS stream_version, last_position"
)


def _list_snapshots(
    state: ChronicleState, kind: str, columns: str, table: str, name: str | None,
    metadata: list[tuple[str, str]], cursor: str | None, limit: int,
) -> dict[str, Any]:
    """One page of a snapshot table (agents, chains), most recently changed first.

    Filters by exact name and metadata fields; the cursor is the last row's log position.
    """
    after = decode_cursor(cursor, (int,))
    rows = _fetch_all(state, *snapshots_sql(table, columns, name, metadata, after[0] if after else None, limit + 1))
    rows, next_cursor = page_of(rows, limit, "last_position")
    return {kind: [_json(r) for r in rows], "next_cursor": next_cursor}


def snapshots_sql(table: str, columns: str, name: str | None, metadata: list[tuple[str, str]],
                  before: int | None, size: int) -> tuple[str, list[Any]]:
    """An agent or chain list query, most recently changed first.

    <table>_position_idx gives the order; with ?name=, <table>_name_idx (name, last_position).
    """
    clauses: list[str] = []
    params: list[Any] = []
    if name is not None:
        clauses.append("name = %s")
        params.append(name)
    _metadata_sql("metadata", metadata, clauses, params)
    if before is not None:
        clauses.append("last_position < %s")
        params.append(before)
    where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
    return f"SELECT {columns} FROM {table} {where} ORDER BY last_position DESC LIMIT %s", [*params, size]


@router.get("/chains", summary="Chains, most recently changed first")
def list_chains(
    state: ChronicleState = Depends(chronicle),
    _: Any = Reader,
    name: str | None = Query(None, max_length=200),
    metadata: list[tuple[str, str]] = Depends(metadata_filters),
    cursor: str | None = Query(None, max_length=200),
    limit: int = Depends(page_size),
    _wait: int | None = Depends(min_position_for("chains")),
) -> ChainPage:
    """Live chains, without their edges (get one chain for those)."""
    return _list_snapshots(state, "chains", CHAIN_COLUMNS, "chain", name, metadata, cursor, limit)


def _chain(state: ChronicleState, chain_id: str) -> dict[str, Any]:
    row = _fetch_one(state, f"SELECT {CHAIN_COLUMNS} FROM chain WHERE chain_id = %s", (chain_id,))
    if row is None:
        missing(state, "chain", chain_id)
    return row


def _edges(state: ChronicleState, chain_id: str) -> list[dict[str, Any]]:
    return [_json(r) for r in _fetch_all(
        state, f"SELECT {EDGE_COLUMNS} FROM edge WHERE chain_id = %s ORDER BY edge_id", (chain_id,)
    )]


@router.get("/chains/{chain_id}", summary="One chain with its canvas and edges")
def get_chain(
    response: Response,
    chain_id: str = Path(..., pattern=ID),
    state: ChronicleState = Depends(chronicle),
    _: Any = Reader,
    _wait: int | None = Depends(min_position_for("chains")),
) -> ChainOut:
    """The current chain, its canvas, nodes and live edges; its stream version is the ETag."""
    row = _chain(state, chain_id)
    response.headers["ETag"] = etag(row["stream_version"])
    return {**_json(row), "edges": _edges(state, chain_id)}


@router.get("/chains/{chain_id}/canvas", summary="A chain's canvas")
def get_canvas(
    response: Response,
    chain_id: str = Path(..., pattern=ID),
    state: ChronicleState = Depends(chronicle),
    _: Any = Reader,
    _wait: int | None = Depends(min_position_for("chains")),
) -> CanvasOut:
    """The chain's canvas state, viewport and nodes; the chain's stream version is the ETag."""
    row = _chain(state, chain_id)
    response.headers["ETag"] = etag(row["stream_version"])
    return {"chain_id": chain_id, "canvas_state": row["canvas_state"], "viewport": row["viewport"],
            "nodes": row["nodes"], "stream_version": row["stream_version"]}


@router.get("/chains/{chain_id}/edges", summary="A chain's live edges")
def get_edges(
    response: Response,
    chain_id: str = Path(..., pattern=ID),
    state: ChronicleState = Depends(chronicle),
    _: Any = Reader,
    _wait: int | None = Depends(min_position_for("chains")),
) -> EdgesOut:
    """The chain's live edges; 404 if there is no such chain."""
    row = _chain(state, chain_id)
    response.headers["ETag"] = etag(row["stream_version"])
    return {"chain_id": chain_id, "edges": _edges(state, chain_id)}
