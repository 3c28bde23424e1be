"""Metadata indexes that operators choose: expression indexes on the document read table.

`chronicle indexes add --type T --field F` builds, without blocking writes (CONCURRENTLY),

    CREATE INDEX document_meta_<T>_<F> ON document ((metadata -> 'F'), created_position DESC)
        WHERE document_type = 'T'

which serves GET /v1/documents?type=T&metadata.F=<value> (api/read_support.py writes the same
`metadata -> 'F'` expression and the type as a literal, so the planner matches the index and
reads the page in order). Without a type the index covers documents of every type that have F.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import tuple_row

# Names that are safe inside the SQL text as literals (no quote, no backslash).
FIELD_PATTERN = re.compile(r"^[A-Za-z0-9_.:-]{1,100}$")
TYPE_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_.:-]{0,63}$")
PREFIX = "document_meta_"


@dataclass(frozen=True)
class MetadataIndex:
    """One operator index: its name, the document type (None: any) and field, and its state."""

    name: str
    document_type: str | None
    field: str
    valid: bool
    size_bytes: int
    definition: str


def index_name(document_type: str | None, field: str) -> str:
    """The index's name: document_meta_<type>_<field>, shortened with a hash past 63 bytes."""
    raw = f"{document_type or 'any'}_{field}"
    name = PREFIX + re.sub(r"[^a-z0-9_]", "_", raw.lower())
    if len(name) > 63 or name != PREFIX + raw:
        name = name[:50] + "_" + hashlib.sha256(raw.encode()).hexdigest()[:12]
    return name


def check(document_type: str | None, field: str) -> None:
    """ValueError naming what is wrong with a type or field an index cannot be built for."""
    if document_type is not None and not TYPE_PATTERN.match(document_type):
        raise ValueError(f"type {document_type!r}: lower-case letters, digits and _.:- only, up to 64")
    if not FIELD_PATTERN.match(field):
        raise ValueError(f"field {field!r}: letters, digits and _.:- only, up to 100")


def add_index(url: str, document_type: str | None, field: str) -> MetadataIndex:
    """Build the index CONCURRENTLY (writes go on); an invalid one a failed build left is rebuilt.

    Returns the index as listed. Needs the right to create indexes on `document` (its owner).
    """
    check(document_type, field)
    name = index_name(document_type, field)
    where = f"document_type = '{document_type}'" if document_type else f"(metadata -> '{field}') IS NOT NULL"
    with psycopg.connect(url, autocommit=True) as conn:
        found = conn.execute("SELECT i.indisvalid FROM pg_index i WHERE i.indexrelid = to_regclass(%s)",
                             (name,)).fetchone()
        if found is not None and not found[0]:
            conn.execute(f'DROP INDEX CONCURRENTLY IF EXISTS "{name}"')
        conn.execute(f'CREATE INDEX CONCURRENTLY IF NOT EXISTS "{name}" ON document'
                     f" ((metadata -> '{field}'), created_position DESC) WHERE {where}")
        comment = sql.Literal(f"{document_type or ''}\t{field}").as_string(conn)
        conn.execute(f'COMMENT ON INDEX "{name}" IS {comment}')
        return next(i for i in list_indexes(conn) if i.name == name)


def list_indexes(conn: psycopg.Connection[Any]) -> list[MetadataIndex]:
    """The operator indexes on `document`, by name, with their validity and size."""
    rows = conn.cursor(row_factory=tuple_row).execute(
        "SELECT c.relname, obj_description(c.oid, 'pg_class'), i.indisvalid, pg_relation_size(c.oid),"
        " pg_get_indexdef(c.oid) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
        " WHERE i.indrelid = 'document'::regclass AND left(c.relname, length(%s)) = %s ORDER BY c.relname",
        (PREFIX, PREFIX)).fetchall()
    found = []
    for name, comment, valid, size, definition in rows:
        document_type, _, field = (comment or "\t").partition("\t")
        found.append(MetadataIndex(name, document_type or None, field, valid, size, definition))
    return found


def drop_index(url: str, name: str) -> bool:
    """Drop an operator index CONCURRENTLY; False if there is no such operator index."""
    if not name.startswith(PREFIX):
        return False
    with psycopg.connect(url, autocommit=True) as conn:
        if not any(i.name == name for i in list_indexes(conn)):
            return False
        conn.execute(f'DROP INDEX CONCURRENTLY IF EXISTS "{name}"')
    return True
