"""Documents as the read model holds them: lists by namespace, type, tag and session; tag history.

The API's read routes and the console call these, so both answer a filter the same way.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from psycopg_pool import ConnectionPool

from service_layer.event_log import any_of

DOC_COLUMNS = (
    "d.document_id, d.namespace, d.document_type AS type, d.title, d.content, d.body, d.metadata, d.version AS document_version,"
    " d.session_id, d.created_by, d.created_by_type, d.created_at, d.updated_at, d.created_position,"
    " d.last_event_id, d.last_version AS stream_version, d.last_position"
)


@dataclass(frozen=True)
class DocumentFilter:
    """Filters of the document list: any of a repeated one's values, every one given."""

    namespaces: list[str] = field(default_factory=list)
    types: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    session: str | None = None
    metadata: list[tuple[str, str]] = field(default_factory=list)


def metadata_sql(column: str, filters: list[tuple[str, str]], clauses: list[str], params: list[Any]) -> None:
    """Containment clauses (GIN-indexed) matching a value as text, or as the JSON it spells."""
    for name, value in filters:
        candidates = [json.dumps({name: value})]
        try:
            parsed = json.loads(value)
            if not isinstance(parsed, str):
                candidates.append(json.dumps({name: parsed}))
        except ValueError:
            pass
        clauses.append("(" + " OR ".join(f"{column} @> %s::jsonb" for _ in candidates) + ")")
        params.extend(candidates)


def documents_page(pool: ConnectionPool, filters: DocumentFilter, before: int | None,
                   limit: int) -> list[dict[str, Any]]:
    """Up to `limit` + 1 live documents matching `filters`, newest first, created before position `before`.

    With tags, each document comes once, at the version the first given tag it carries points to.
    """
    clauses: list[str] = []
    params: list[Any] = []
    namespaces, types, tags = (list(dict.fromkeys(v)) for v in (filters.namespaces, filters.types, filters.tags))
    any_of("d.namespace", namespaces, clauses, params)
    any_of("d.document_type", types, clauses, params)
    if filters.session is not None:
        clauses.append("d.session_id = %s")
        params.append(filters.session)
    metadata_sql("d.metadata", filters.metadata, clauses, params)
    if before is not None:
        clauses.append("d.created_position < %s")
        params.append(before)
    where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
    if not tags:
        sql = f"SELECT {DOC_COLUMNS} FROM document d {where} ORDER BY d.created_position DESC LIMIT %s"
    else:
        # active_tag's key (tag, document_id) finds the tagged documents; with several tags a
        # document carrying more than one comes once, at the first given tag's version.
        where = "WHERE t.tag = ANY(%s)" + ("".join(f" AND {c}" for c in clauses))
        params.insert(0, tags)
        sql = (
            "SELECT DISTINCT ON (d.created_position) d.document_id, d.namespace, d.document_type AS type, v.title,"
            " b.content, b.body, v.metadata, v.version AS document_version, d.session_id, d.created_by,"
            " d.created_by_type, d.created_at, v.created_at AS updated_at, d.created_position, d.last_event_id,"
            " d.last_version AS stream_version, d.last_position, t.tag"
            " FROM active_tag t JOIN document d ON d.document_id = t.document_id"
            " JOIN document_version v ON v.document_id = t.document_id AND v.version = t.document_version"
            " LEFT JOIN document_body b ON b.body_hash = v.body_hash"
            f" {where} ORDER BY d.created_position DESC, array_position(%s::text[], t.tag) LIMIT %s"
        )
        params.append(tags)
    params.append(limit + 1)
    with pool.connection() as conn:
        return conn.execute(sql, params).fetchall()


def tag_history(pool: ConnectionPool, document_id: str, tag: str | None = None) -> tuple[list[dict], list[dict]]:
    """Where each of a document's tags points now, and every move of them (or of `tag`), oldest first."""
    with pool.connection() as conn:
        active = conn.execute(
            "SELECT tag, document_version, updated_at, updated_by FROM active_tag WHERE document_id = %s"
            " ORDER BY tag", (document_id,),
        ).fetchall()
        history = conn.execute(
            "SELECT event_id, tag, document_version, previous_version, operation, created_at, created_by,"
            " created_by_type, session_id, last_version AS stream_version, last_position FROM tag_event"
            " WHERE document_id = %s AND (%s::text IS NULL OR tag = %s::text) ORDER BY last_position LIMIT 1000",
            (document_id, tag, tag),
        ).fetchall()
    return active, history
