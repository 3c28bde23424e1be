"""Lay a cleaned schema dump out table by table, so that a reader finds each table in one place.

pg_dump lists objects by kind: every table, then every primary key, then every index, and so
on, so one table's parts lie hundreds of lines apart. Here each table becomes one CREATE TABLE
that carries its constraints, followed by its sequences, column defaults, indexes and triggers.
The statements are pg_dump's own, only moved, with ADD CONSTRAINT folded into the table and
a bigserial column written as such; tests/test_schema_current.py loads the result into an
empty database and compares pg_dump of that with pg_dump of a migrated one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# pg_dump's comment before each object: "-- Name: tag_event tag_event_pkey; Type: CONSTRAINT; ...".
_ENTRY = re.compile(r"^-- Name: (?P<name>.+?); Type: (?P<type>[A-Z ]+); Schema: (?P<schema>[^;]*); Owner: .*$",
                    re.MULTILINE)
# The kinds named "<table> <object>" in that comment, each moved under its table.
_NAMED_WITH_TABLE = ("CONSTRAINT", "FK CONSTRAINT", "DEFAULT", "TRIGGER")
_INDEX_ON = re.compile(r"\bON (?:ONLY )?(?P<schema>\w+)\.(?P<table>\w+)")
_OWNED_BY = re.compile(r"\bOWNED BY (?P<schema>\w+)\.(?P<table>\w+)\.")
_ADD_CONSTRAINT = re.compile(r"\AALTER TABLE ONLY \S+\n    ADD (?P<constraint>CONSTRAINT .+);\Z", re.DOTALL)
_REFERENCES = re.compile(r"\bREFERENCES (?P<schema>\w+)\.(?P<table>\w+)\(")
# The sequence pg_dump writes for a bigserial column (the defaults of CREATE SEQUENCE).
_SERIAL_SEQUENCE = ("CREATE SEQUENCE {}\n    START WITH 1\n    INCREMENT BY 1\n    NO MINVALUE\n    NO MAXVALUE\n"
                    "    CACHE 1;")
# Within a table's part: where each kind goes (tables' own constraints are folded in).
_ORDER = ("SEQUENCE", "DEFAULT", "CONSTRAINT", "FK CONSTRAINT", "INDEX", "TRIGGER")


@dataclass
class Entry:
    """One object of the dump: pg_dump's comment line and its statement(s)."""

    comment: str
    name: str
    kind: str
    schema: str
    sql: str


@dataclass
class Table:
    """A table's entry and the entries that belong to it, by kind."""

    entry: Entry
    parts: dict[str, list[Entry]] = field(default_factory=dict)


def split(dump: str) -> tuple[str, list[Entry]]:
    """The text before the first object (the header), and the objects in pg_dump's order."""
    found = list(_ENTRY.finditer(dump))
    if not found:
        return dump, []
    entries = []
    for match, after in zip(found, [*found[1:], None]):
        sql = dump[match.end():after.start() if after else len(dump)].strip()
        entries.append(Entry(match.group(0), match["name"], match["type"], match["schema"], sql))
    return dump[:found[0].start()], entries


def _table_of(entry: Entry, sequences: dict[str, tuple[str, str]]) -> tuple[str, str] | None:
    """The (schema, table) an entry belongs to, or None for one that stands alone (a function)."""
    if entry.kind in _NAMED_WITH_TABLE and " " in entry.name:
        return entry.schema, entry.name.split(" ", 1)[0]
    if entry.kind == "INDEX" and (on := _INDEX_ON.search(entry.sql)):
        return on["schema"], on["table"]
    if entry.kind in ("SEQUENCE", "SEQUENCE OWNED BY"):
        return sequences.get(entry.name)
    return None


def _fold(table: Entry, constraint: Entry) -> bool:
    """Move an ADD CONSTRAINT into the table's CREATE TABLE, if it can stand there; whether it did."""
    added = _ADD_CONSTRAINT.match(constraint.sql)
    close = table.sql.rfind("\n)")
    if not added or "NOT VALID" in added["constraint"] or " PARTITION " in table.sql or close < 0:
        return False
    comma = "" if table.sql[:close].endswith("(") else ","
    table.sql = f"{table.sql[:close]}{comma}\n    {added['constraint']}{table.sql[close:]}"
    return True


def _fold_serials(table: Table) -> None:
    """Write each bigserial column as such, in place of the sequence, OWNED BY and DEFAULT that
    pg_dump spells it out as, where those are exactly what `bigserial` makes."""
    schema, name = table.entry.schema, table.entry.name
    defaults = {e.sql: e for e in table.parts.get("DEFAULT", [])}
    sequences = table.parts.get("SEQUENCE", [])
    for created, owned in zip(sequences[0::2], sequences[1::2]):
        column = owned.sql.rsplit(".", 1)[-1].rstrip(";")
        sequence = f"{schema}.{name}_{column.strip(chr(34))}_seq"
        default = (f"ALTER TABLE ONLY {schema}.{name} ALTER COLUMN {column} "
                   f"SET DEFAULT nextval('{sequence}'::regclass);")
        line = re.compile(rf"^    {re.escape(column)} bigint NOT NULL(,?)$", re.MULTILINE)
        if (created.sql != _SERIAL_SEQUENCE.format(sequence) or default not in defaults
                or owned.sql != f"ALTER SEQUENCE {sequence} OWNED BY {schema}.{name}.{column};"
                or len(line.findall(table.entry.sql)) != 1):
            continue
        table.entry.sql = line.sub(rf"    {column} bigserial NOT NULL\1", table.entry.sql)
        for part, kind in ((created, "SEQUENCE"), (owned, "SEQUENCE"), (defaults[default], "DEFAULT")):
            table.parts[kind].remove(part)


def by_table(dump: str) -> str:
    """The dump with each table's objects gathered under it, in pg_dump's order of tables.

    A foreign key to a table defined further down stays an ALTER TABLE, placed right after
    the table it references, so that the text still runs top to bottom.
    """
    header, entries = split(dump)
    sequences = {e.name: (o["schema"], o["table"]) for e in entries
                 if e.kind == "SEQUENCE OWNED BY" and (o := _OWNED_BY.search(e.sql))}
    tables = {(e.schema, e.name): Table(e) for e in entries if e.kind == "TABLE"}
    standalone: list[Entry | Table] = []
    for entry in entries:
        owner = _table_of(entry, sequences)
        if entry.kind == "TABLE":
            standalone.append(tables[(entry.schema, entry.name)])
        elif owner in tables:
            kind = "SEQUENCE" if entry.kind == "SEQUENCE OWNED BY" else entry.kind
            tables[owner].parts.setdefault(kind, []).append(entry)
        else:
            standalone.append(entry)
    created: set[tuple[str, str]] = set()
    waiting: dict[tuple[str, str], list[Entry]] = {}  # foreign keys, by the table they wait for
    out: list[str] = []
    for item in standalone:
        if isinstance(item, Entry):
            out.append(f"{item.comment}\n\n{item.sql}")
            continue
        key = (item.entry.schema, item.entry.name)
        _fold_serials(item)
        for constraint in item.parts.pop("CONSTRAINT", []) + item.parts.pop("FK CONSTRAINT", []):
            ref = _REFERENCES.search(constraint.sql)
            target = (ref["schema"], ref["table"]) if ref else None
            if target in tables and target not in created and target != key:
                waiting.setdefault(target, []).append(constraint)
            elif not _fold(item.entry, constraint):
                item.parts.setdefault(constraint.kind, []).append(constraint)
        created.add(key)
        out.append(_section(item) + "".join(f"\n\n{fk.comment}\n\n{fk.sql}" for fk in waiting.pop(key, [])))
    return header + "\n\n".join(out) + "\n"


def _section(table: Table) -> str:
    """The table's comment and CREATE TABLE, then its other parts, one kind to a paragraph."""
    paragraphs = [f"{table.entry.comment}\n\n{table.entry.sql}"]
    for kind in _ORDER:
        if table.parts.get(kind):
            paragraphs.append("\n".join(e.sql for e in table.parts[kind]))
    return "\n\n".join(paragraphs)
