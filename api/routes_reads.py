"""Reads from the snapshot tables the projection workers keep: documents, agents, chains.

Every read accepts `?min_position=` (read-your-writes). Lists are newest first with keyset
cursors. A resource's ETag is the stream version of the last event that shaped its row.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Response
from pydantic import StringConstraints

from api.deps import ChronicleState, Reader, decode_cursor, min_position_for, page_of
from api.problems import Problem
from api.read_support import (
    PageAsked, Paging, SnapshotQuery, _fetch_all, _fetch_one, _json, found, metadata_filters, reading, snapshot_query,
)
from service_layer.document_reads import DocumentFilter, documents_page, tag_history
from service_layer.read_queries import DOC_COLUMNS, snapshots_sql
from api.schemas import (
    ExactRoute,
    AgentOut, AgentPage, CanvasOut, ChainOut, ChainPage, DocumentOut, DocumentPage, EdgesOut, ExecutionPage, TagsOut,
    VersionOut, VersionPage,
)

# The role is checked before any query parameter: a caller without a key hears 401 first.
router = APIRouter(prefix="/v1", tags=["reads"], route_class=ExactRoute, dependencies=[Reader])
ID = r"^[A-Za-z0-9][A-Za-z0-9._:@+=-]{0,199}$"
IDENT = r"^[a-z0-9][a-z0-9_.:-]{0,63}$"
# Each route's state, for a reader, after ?min_position= reached the projection it reads.
DOCUMENTS = reading(min_position_for("documents"))
AGENTS = reading(min_position_for("agents"))
CHAINS = reading(min_position_for("chains"))
# A document, agent or chain id in a path.
StreamId = Annotated[str, Path(pattern=ID)]


# -- documents -------------------------------------------------------------------------------

# One document by its key with its live tags (tag -> version, by tag): one query, one round trip.
DOCUMENT_SQL = f"""
SELECT {DOC_COLUMNS},
       (SELECT coalesce(json_object_agg(t.tag, t.document_version ORDER BY t.tag), '{{}}')
        FROM active_tag t WHERE t.document_id = d.document_id) AS tags
FROM document d WHERE d.document_id = %s
"""


IdentValue = Annotated[str, StringConstraints(pattern=IDENT)]
MAX_FILTER_VALUES = 50


@router.get("/documents", summary="Documents, newest first, by namespace, type, tag, session, metadata")
def list_documents(
    namespace: list[IdentValue] | None = Query(None, max_length=MAX_FILTER_VALUES, description="repeatable: any of them"),
    type: list[IdentValue] | None = Query(None, max_length=MAX_FILTER_VALUES, description="document type, repeatable"),
    tag: list[IdentValue] | None = Query(
        None, max_length=MAX_FILTER_VALUES,
        description="only tagged documents, at the tagged version; repeatable (the first tag given that a document carries)"),
    session: str | None = Query(None, max_length=200, description=(
        "session id that created the document (every session that touched it: /v1/sessions/{id}/documents)")),
    metadata: list[tuple[str, str]] = Depends(metadata_filters),
    page: PageAsked = Paging,
    state: ChronicleState = DOCUMENTS,
) -> DocumentPage:
    """Live documents matching every filter (any of a repeated one's values), newest first, a page at a time.

    With `?tag=`, each document comes once, at the version the first given tag it carries points to.
    """
    after = decode_cursor(page.cursor, (int,))
    filters = DocumentFilter(namespaces=namespace or [], types=type or [], tags=tag or [], session=session,
                             metadata=metadata)
    rows = documents_page(state.pool, filters, after[0] if after else None, page.limit)
    rows, next_cursor = page_of(rows, page.limit, "created_position")
    return {"documents": [_json(_body_from_log(state, r)) for r in rows], "next_cursor": next_cursor}


def _body_from_log(state: ChronicleState, row: dict[str, Any]) -> dict[str, Any]:
    """A version row whose body retention removed (projections/retention.py) gets it from the log.

    Rows without the `body_pruned` column are returned as they are.
    """
    version = row.pop("body_stream_version", None) or row["stream_version"]
    if row.pop("body_pruned", False):
        at = state.service.state_at(row["document_id"], version=version).state
        row["content"], row["body"] = at.get("content"), at.get("body")
    return row


@router.get("/documents/{document_id}", summary="One document")
def get_document(response: Response, document_id: StreamId, state: ChronicleState = DOCUMENTS) -> DocumentOut:
    """The current document with its live tags; its stream version is the ETag. 404 if none."""
    return _json(found(state, response, "document", document_id, _fetch_one(state, DOCUMENT_SQL, (document_id,))))


@router.get("/documents/{document_id}/versions", summary="A document's versions")
def list_versions(document_id: StreamId, page: PageAsked = Paging, state: ChronicleState = DOCUMENTS) -> VersionPage:
    """Version headers, oldest first, without bodies; they outlive a deleted document."""
    after = (decode_cursor(page.cursor, (int,)) or (0,))[0]
    rows = _fetch_all(
        state,
        "SELECT document_id, version AS document_version, namespace, document_type AS type, title, metadata, change_description,"
        " session_id, created_by, created_by_type, created_at, last_version AS stream_version, last_position"
        " FROM document_version WHERE document_id = %s AND version > %s ORDER BY version LIMIT %s",
        (document_id, after, page.limit + 1),
    )
    if not rows and after == 0:
        raise Problem(404, "document_not_found", f"no document {document_id!r}", field="document_id")
    rows, next_cursor = page_of(rows, page.limit, "document_version")
    return {"document_id": document_id, "versions": [_json(r) for r in rows], "next_cursor": next_cursor}


@router.get("/documents/{document_id}/versions/{version}", summary="One version of a document, with its body")
def get_version(document_id: StreamId, version: int = Path(..., ge=1), state: ChronicleState = DOCUMENTS) -> VersionOut:
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
    return _json(_body_from_log(state, row))


@router.get("/documents/{document_id}/tags", summary="A document's live tags and their history")
def document_tags(
    document_id: StreamId,
    tag: str | None = Query(None, pattern=IDENT, description="only this tag's history"),
    state: ChronicleState = DOCUMENTS,
) -> TagsOut:
    """Where each tag points now, and every move of the document's tags, oldest first."""
    active, history = tag_history(state.pool, document_id, tag)
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
def list_agents(query: SnapshotQuery = Depends(snapshot_query), state: ChronicleState = AGENTS) -> AgentPage:
    """Live agents, most recently changed first."""
    return _list_snapshots(state, "agents", AGENT_COLUMNS, "agent", query)


@router.get("/agents/{agent_id}", summary="One agent")
def get_agent(response: Response, agent_id: StreamId, state: ChronicleState = AGENTS) -> AgentOut:
    """The current agent; its stream version is the ETag. 404 if none."""
    row = _fetch_one(state, f"SELECT {AGENT_COLUMNS} FROM agent WHERE agent_id = %s", (agent_id,))
    return _json(found(state, response, "agent", agent_id, row))


@router.get("/agents/{agent_id}/executions", summary="An agent's executions, newest first")
def list_executions(agent_id: StreamId, page: PageAsked = Paging, state: ChronicleState = AGENTS) -> ExecutionPage:
    """Executions of one agent, newest first; they outlive a deleted agent."""
    after = decode_cursor(page.cursor, (int,))
    rows = _fetch_all(
        state,
        "SELECT agent_id, execution_id, input, output, duration_ms, tokens, metadata, session_id, created_at,"
        " last_event_id, last_version AS stream_version, last_position FROM agent_execution"
        " WHERE agent_id = %s AND (%s::bigint IS NULL OR last_position < %s::bigint)"
        " ORDER BY last_position DESC LIMIT %s",
        (agent_id, after[0] if after else None, after[0] if after else None, page.limit + 1),
    )
    rows, next_cursor = page_of(rows, page.limit, "last_position")
    return {"agent_id": agent_id, "executions": [_json(r) for r in rows], "next_cursor": next_cursor}


# -- chains ----------------------------------------------------------------------------------

CHAIN_COLUMNS = (
    "chain_id, name, description, metadata, canvas_state, viewport, nodes, created_at, updated_at,"
    " last_event_id, last_version AS stream_version, last_position"
)
EDGE_COLUMNS = (
    "edge_id, source_id, target_id, type, metadata, created_at, updated_at, last_version AS stream_version, last_position"
)


def _list_snapshots(state: ChronicleState, kind: str, columns: str, table: str, query: SnapshotQuery) -> dict[str, Any]:
    """One page of a snapshot table (agents, chains), most recently changed first.

    Filters by exact name and metadata fields; the cursor is the last row's log position.
    """
    after = decode_cursor(query.page.cursor, (int,))
    limit = query.page.limit
    rows = _fetch_all(state, *snapshots_sql(table, columns, query.name, query.metadata,
                                            after[0] if after else None, limit + 1))
    rows, next_cursor = page_of(rows, limit, "last_position")
    return {kind: [_json(r) for r in rows], "next_cursor": next_cursor}


@router.get("/chains", summary="Chains, most recently changed first")
def list_chains(query: SnapshotQuery = Depends(snapshot_query), state: ChronicleState = CHAINS) -> ChainPage:
    """Live chains, without their edges (get one chain for those)."""
    return _list_snapshots(state, "chains", CHAIN_COLUMNS, "chain", query)


def _chain(state: ChronicleState, response: Response, chain_id: str) -> dict[str, Any]:
    """The chain's row, its stream version as the ETag; 404 or 410 if there is none."""
    row = _fetch_one(state, f"SELECT {CHAIN_COLUMNS} FROM chain WHERE chain_id = %s", (chain_id,))
    return found(state, response, "chain", chain_id, row)


def _edges(state: ChronicleState, chain_id: str) -> list[dict[str, Any]]:
    return [_json(r) for r in _fetch_all(
        state, f"SELECT {EDGE_COLUMNS} FROM edge WHERE chain_id = %s ORDER BY edge_id", (chain_id,)
    )]


@router.get("/chains/{chain_id}", summary="One chain with its canvas and edges")
def get_chain(response: Response, chain_id: StreamId, state: ChronicleState = CHAINS) -> ChainOut:
    """The current chain, its canvas, nodes and live edges; its stream version is the ETag."""
    row = _chain(state, response, chain_id)
    return {**_json(row), "edges": _edges(state, chain_id)}


@router.get("/chains/{chain_id}/canvas", summary="A chain's canvas")
def get_canvas(response: Response, chain_id: StreamId, state: ChronicleState = CHAINS) -> CanvasOut:
    """The chain's canvas state, viewport and nodes; the chain's stream version is the ETag."""
    row = _chain(state, response, chain_id)
    return {"chain_id": chain_id, "canvas_state": row["canvas_state"], "viewport": row["viewport"],
            "nodes": row["nodes"], "stream_version": row["stream_version"]}


@router.get("/chains/{chain_id}/edges", summary="A chain's live edges")
def get_edges(response: Response, chain_id: StreamId, state: ChronicleState = CHAINS) -> EdgesOut:
    """The chain's live edges; 404 if there is no such chain."""
    _chain(state, response, chain_id)
    return {"chain_id": chain_id, "edges": _edges(state, chain_id)}
