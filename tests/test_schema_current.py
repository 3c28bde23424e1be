"""schema/current.sql is the schema a freshly migrated database has, so it can be read top to bottom."""

from __future__ import annotations

import difflib

import psycopg

from schema.by_table import by_table, split
from schema.dump_current import (
    CURRENT,
    REGENERATE,
    clean,
    empty_database,
    migrated_schema,
    pg_dump_schema,
)


def test_current_sql_matches_a_freshly_migrated_database(admin_url: str) -> None:
    """Migrate a new database, dump it, compare: a migration without a regenerated current.sql fails."""
    dumped = migrated_schema(admin_url)
    committed = CURRENT.read_text() if CURRENT.exists() else ""
    if dumped != committed:
        diff = "".join(difflib.unified_diff(
            committed.splitlines(keepends=True), dumped.splitlines(keepends=True),
            "schema/current.sql (committed)", "freshly migrated database", n=1,
        ))
        raise AssertionError(
            f"schema/current.sql differs from a freshly migrated database; regenerate it with:\n"
            f"    {REGENERATE}\n(or `make schema`) and commit it.\n{diff[:4000]}"
        )


def test_current_sql_loaded_into_an_empty_database_gives_the_migrated_schema(admin_url: str) -> None:
    """current.sql is valid SQL that reproduces the schema: loaded as it is into an empty database,
    pg_dump finds there exactly what it finds in a migrated one (compared in pg_dump's own order)."""
    with empty_database(admin_url) as url:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(CURRENT.read_text())
        loaded = pg_dump_schema(url)
    migrated = migrated_schema(admin_url, dump=pg_dump_schema)
    assert loaded == migrated, "".join(difflib.unified_diff(
        migrated.splitlines(keepends=True), loaded.splitlines(keepends=True), "migrated", "loaded current.sql", n=1,
    ))[:4000]


def _entry(name: str, kind: str, sql: str) -> str:
    """One object as pg_dump writes it: its comment line, then its statement."""
    return f"-- Name: {name}; Type: {kind}; Schema: public; Owner: -\n\n{sql}\n\n"


def test_each_table_is_shown_once_with_its_constraints_indexes_and_triggers() -> None:
    """Laid out by table: a primary key folds into its CREATE TABLE, a table's index and trigger
    follow it, and a foreign key to a table further down waits, as an ALTER, until that table exists."""
    dump = "-- header\n\n" + "".join([
        _entry("a", "TABLE", "CREATE TABLE public.a (\n    id integer NOT NULL,\n    b_id integer\n);"),
        _entry("b", "TABLE", "CREATE TABLE public.b (\n    id integer NOT NULL\n);"),
        _entry("a a_pkey", "CONSTRAINT", "ALTER TABLE ONLY public.a\n    ADD CONSTRAINT a_pkey PRIMARY KEY (id);"),
        _entry("b b_pkey", "CONSTRAINT", "ALTER TABLE ONLY public.b\n    ADD CONSTRAINT b_pkey PRIMARY KEY (id);"),
        _entry("a_b_idx", "INDEX", "CREATE INDEX a_b_idx ON public.a USING btree (b_id);"),
        _entry("b b_guard", "TRIGGER",
               "CREATE TRIGGER b_guard BEFORE DELETE ON public.b FOR EACH ROW EXECUTE FUNCTION public.f();"),
        _entry("a a_b_id_fkey", "FK CONSTRAINT",
              "ALTER TABLE ONLY public.a\n    ADD CONSTRAINT a_b_id_fkey FOREIGN KEY (b_id) REFERENCES public.b(id);"),
    ])
    laid_out = by_table(dump)
    assert laid_out.startswith("-- header\n")
    assert [(e.name, e.kind) for e in split(laid_out)[1]] == [("a", "TABLE"), ("b", "TABLE"),
                                                             ("a a_b_id_fkey", "FK CONSTRAINT")]
    assert "    b_id integer,\n    CONSTRAINT a_pkey PRIMARY KEY (id)\n);\n\nCREATE INDEX a_b_idx" in laid_out
    assert "    CONSTRAINT b_pkey PRIMARY KEY (id)\n);\n\nCREATE TRIGGER b_guard" in laid_out
    assert laid_out.index("CREATE TABLE public.b") < laid_out.index("REFERENCES public.b(id)")


def test_a_bigserial_column_is_written_as_such() -> None:
    """The sequence, OWNED BY and DEFAULT that pg_dump writes for a bigserial fold into the column."""
    dump = "".join([
        _entry("t", "TABLE", 'CREATE TABLE public.t (\n    "position" bigint NOT NULL,\n    n bigint NOT NULL\n);'),
        _entry("t_position_seq", "SEQUENCE", "CREATE SEQUENCE public.t_position_seq\n    START WITH 1\n"
              "    INCREMENT BY 1\n    NO MINVALUE\n    NO MAXVALUE\n    CACHE 1;"),
        _entry("t_position_seq", "SEQUENCE OWNED BY",
               'ALTER SEQUENCE public.t_position_seq OWNED BY public.t."position";'),
        _entry("t_n_seq", "SEQUENCE", "CREATE SEQUENCE public.t_n_seq\n    START WITH 5\n"
              "    INCREMENT BY 1\n    NO MINVALUE\n    NO MAXVALUE\n    CACHE 1;"),
        _entry("t_n_seq", "SEQUENCE OWNED BY", "ALTER SEQUENCE public.t_n_seq OWNED BY public.t.n;"),
        _entry("t position", "DEFAULT", 'ALTER TABLE ONLY public.t ALTER COLUMN "position" '
              "SET DEFAULT nextval('public.t_position_seq'::regclass);"),
        _entry("t n", "DEFAULT",
               "ALTER TABLE ONLY public.t ALTER COLUMN n SET DEFAULT nextval('public.t_n_seq'::regclass);"),
    ])
    laid_out = by_table(dump)
    assert '    "position" bigserial NOT NULL,\n    n bigint NOT NULL\n);' in laid_out
    assert "t_position_seq" not in laid_out  # folded
    assert "START WITH 5" in laid_out and "SET DEFAULT nextval('public.t_n_seq'" in laid_out  # not a plain bigserial


def test_cleaning_drops_run_specific_lines_only() -> None:
    """The \\restrict key, SET lines and the banner change per run or version; statements stay."""
    raw = (
        "--\n-- PostgreSQL database dump\n--\n\n\\restrict abc123\n\n"
        "-- Dumped from database version 15.20\n-- Dumped by pg_dump version 15.20\n\n"
        "SET statement_timeout = 0;\nSELECT pg_catalog.set_config('search_path', '', false);\n\n"
        "--\n-- Name: t; Type: TABLE; Schema: public; Owner: -\n--\n\nCREATE TABLE public.t (a integer);\n"
        "\n\\unrestrict abc123\n"
    )
    cleaned = clean(raw)
    assert "restrict" not in cleaned and "statement_timeout" not in cleaned and "Dumped" not in cleaned
    assert "set_config" not in cleaned and "SET check_function_bodies = false;" in cleaned  # the header's own
    assert "CREATE TABLE public.t (a integer);" in cleaned
    assert "-- Name: t; Type: TABLE" in cleaned
    assert clean(raw.replace("abc123", "zzz999").replace("15.20", "15.21")) == cleaned
