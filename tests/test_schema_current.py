"""schema/current.sql is the schema a freshly migrated database has, so it can be read top to bottom."""

from __future__ import annotations

import difflib

from schema.dump_current import CURRENT, REGENERATE, clean, migrated_schema


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
    assert "restrict" not in cleaned and "SET " not in cleaned and "Dumped" not in cleaned
    assert "CREATE TABLE public.t (a integer);" in cleaned
    assert "-- Name: t; Type: TABLE" in cleaned
    assert clean(raw.replace("abc123", "zzz999").replace("15.20", "15.21")) == cleaned
