"""The read routes' list queries: each reads its page in order from an index that gives the order.

Built here, apart from the routes, so tests can EXPLAIN exactly what a route runs
(tests/store/test_bounded_plans.py). The API's routes and the console both run them.
"""

from __future__ import annotations

import json
from typing import Any

from infrastructure.read_indexes import FIELD_PATTERN
from service_layer.event_log import any_of

DOC_COLUMNS = (
    "d.document_id, d.namespace, d.document_type AS type, d.title, d.content, d.body, d.metadata, d.version AS document_version,"
    " d.session_id, d.created_by, d.created_by_type, d.created_at, d.updated_at, d.created_position,"
    " d.last_event_id, d.last_version AS stream_version, d.last_position"
)


def metadata_sql(column: str, filters: list[tuple[str, str]], clauses: list[str], params: list[Any]) -> None:
    """`column.field` equal to a value as text, or as the JSON it spells.

    A scalar match is `column -> field` equality (for scalars the same as containment), which an
    operator's expression index serves (`chronicle indexes add`), in order when the value has one
    reading; a JSON object or array value is matched by containment, which the GIN index serves.
    """
    for field, value in filters:
        candidates: list[Any] = [value]
        try:
            parsed = json.loads(value)
            if not isinstance(parsed, str):
                candidates.append(parsed)
        except ValueError:
            pass
        scalars = [c for c in candidates if not isinstance(c, (dict, list))]
        either = []
        if scalars:
            # A plain field name goes into the text (so a prepared plan still matches the index).
            key = f"'{field}'" if FIELD_PATTERN.match(field) else "%s::text"
            if not FIELD_PATTERN.match(field):
                params.append(field)
            if len(scalars) == 1:
                either.append(f"{column} -> {key} = %s::jsonb")
                params.append(json.dumps(scalars[0]))
            else:
                either.append(f"{column} -> {key} = ANY(%s::jsonb[])")
                params.append([json.dumps(c) for c in scalars])
        for c in candidates:
            if isinstance(c, (dict, list)):
                either.append(f"{column} @> %s::jsonb")
                params.append(json.dumps({field: c}))
        clauses.append("(" + " OR ".join(either) + ")" if len(either) > 1 else either[0])


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
    metadata_sql("d.metadata", metadata, clauses, params)
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
    " d.last_position, t.tag, {rank} AS tag_rank, b.body_hash IS NULL AS body_pruned,"
    " v.last_version AS body_stream_version"
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
    metadata_sql("metadata", metadata, clauses, params)
    if before is not None:
        clauses.append("last_position < %s")
        params.append(before)
    where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
    return f"SELECT {columns} FROM {table} {where} ORDER BY last_position DESC LIMIT %s", [*params, size]
