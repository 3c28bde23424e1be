"""The benchmarks' log writer (bench/_db.py) fills as many segments as its events need."""

from __future__ import annotations

import sys
from pathlib import Path

import psycopg
from psycopg.rows import dict_row

from infrastructure.log_verify import verify_log
from tests.conftest import as_owner

from .segments import misplaced_events, use_small_segments

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))


def test_a_bulk_write_past_the_segments_made_ahead_makes_the_ones_it_needs(fresh_database_url: str) -> None:
    import _db

    use_small_segments(fresh_database_url, size=50, ahead=1)  # room for about 100 positions
    written = _db.write_log(as_owner(fresh_database_url), 400)
    with psycopg.connect(fresh_database_url, row_factory=dict_row) as conn:
        assert conn.execute("SELECT count(*) AS n FROM events").fetchone()["n"] == written >= 400
        assert misplaced_events(conn) == []
        assert conn.execute("SELECT segments_ahead FROM log_segment_plan").fetchone()["segments_ahead"] == 1
        assert verify_log(conn).ok
