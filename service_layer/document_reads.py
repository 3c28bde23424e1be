"""Documents as the read model holds them: lists by namespace, type, tag and session; tag history.

The API's read routes and the console call these, so both answer a filter the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from psycopg_pool import ConnectionPool

from service_layer.read_queries import documents_sql


@dataclass(frozen=True)
class DocumentFilter:
    """Filters of the document list: any of a repeated one's values, every one given."""

    namespaces: list[str] = field(default_factory=list)
    types: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    session: str | None = None
    metadata: list[tuple[str, str]] = field(default_factory=list)


def documents_page(pool: ConnectionPool, filters: DocumentFilter, before: int | None,
                   limit: int) -> list[dict[str, Any]]:
    """Up to `limit` + 1 live documents matching `filters`, newest first, created before position `before`.

    With tags, each document comes once, at the version the first given tag it carries points to;
    its `body_pruned` says whether retention took that version's body out of the read model.
    """
    sql, params = documents_sql(*(list(dict.fromkeys(v)) for v in (filters.namespaces, filters.types, filters.tags)),
                                filters.session, filters.metadata, before, limit + 1)
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
