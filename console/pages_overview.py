"""The overview page: the log's head and safe position, what holds it back, command rate, lag.

It polls its live part (htmx) every two seconds; a poll adds a lag sample to the chart's table
(console_lag_sample), which every API process shares.
"""

from __future__ import annotations

import json
import time
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse
from psycopg_pool import ConnectionPool

from console.auth import Viewer
from console.web import need, page, state_of
from service_layer import operations

router = APIRouter()
SAMPLE_EVERY_SECONDS = 2
CHART_MINUTES = 10
CHART_WIDTH, CHART_HEIGHT = 480, 120


def _overview(request: Request) -> dict[str, Any]:
    """The overview's figures, with a lag sample recorded if the newest is older than SAMPLE_EVERY_SECONDS."""
    state = state_of(request)
    view = operations.projections_view(state.pool, state.store)
    samples = record_lag(state.pool, {p["name"]: p["lag_events"] for p in view["projections"]})
    return {"log": view["log"], "projections": view["projections"],
            "commands_per_minute": operations.command_rate(state.pool, 60), "chart": lag_chart(samples)}


def record_lag(pool: ConnectionPool, lags: dict[str, int]) -> list[tuple[float, dict[str, int]]]:
    """Add a sample of each projection's lag (unless one is fresh), drop old ones; the last minutes' samples."""
    with pool.connection() as conn:
        # Several processes may sample at once: the same instant twice is one sample.
        conn.execute(
            "INSERT INTO console_lag_sample (taken_at, projection, lag_events)"
            " SELECT date_trunc('second', now()), l.key, l.value::bigint FROM jsonb_each_text(%s::jsonb) l"
            " WHERE NOT EXISTS (SELECT 1 FROM console_lag_sample WHERE taken_at > now() - make_interval(secs => %s))"
            " ON CONFLICT DO NOTHING", (json.dumps(lags), SAMPLE_EVERY_SECONDS))
        conn.execute("DELETE FROM console_lag_sample WHERE taken_at < now() - make_interval(mins => %s)",
                     (CHART_MINUTES,))
        rows = conn.execute(
            "SELECT extract(epoch FROM taken_at)::float8 AS t, extract(epoch FROM now())::float8 AS now,"
            " projection, lag_events FROM console_lag_sample"
            " WHERE taken_at > now() - make_interval(mins => %s) ORDER BY taken_at", (CHART_MINUTES,)).fetchall()
    samples: dict[float, dict[str, int]] = {}
    for row in rows:
        samples.setdefault(row["t"], {})[row["projection"]] = row["lag_events"]
    now = rows[-1]["now"] if rows else time.time()
    return [(now, {})] + sorted(samples.items())


def lag_chart(samples: list[tuple[float, dict[str, int]]]) -> dict[str, Any]:
    """Polylines (SVG points) of each projection's lag over the last CHART_MINUTES, scaled to the chart.

    The first sample given is (now, {}): it fixes the chart's right edge.
    """
    now, recent = samples[0][0], samples[1:]
    start = now - CHART_MINUTES * 60
    top = max([1] + [lag for _, lags in recent for lag in lags.values()])
    lines = []
    for name in sorted({name for _, lags in recent for name in lags}):
        points = [(round((t - start) / (CHART_MINUTES * 60) * CHART_WIDTH, 1),
                   round(CHART_HEIGHT - lags[name] / top * (CHART_HEIGHT - 10), 1)) for t, lags in recent if name in lags]
        lines.append({"name": name, "points": " ".join(f"{x},{y}" for x, y in points), "last": points[-1]})
    return {"width": CHART_WIDTH, "height": CHART_HEIGHT, "top": top, "minutes": CHART_MINUTES, "lines": lines,
            "samples": len(recent)}


@router.get("/", response_class=HTMLResponse)
def overview(request: Request, _: Viewer = Depends(need("operate"))) -> HTMLResponse:
    """The overview page (operators: it shows what GET /v1/projections and /v1/log/blockers show)."""
    return page(request, "overview.html", **_overview(request))


@router.get("/overview/live", response_class=HTMLResponse)
def overview_live(request: Request, _: Viewer = Depends(need("operate"))) -> HTMLResponse:
    """The overview's live part alone, for htmx to swap in."""
    return page(request, "overview_live.html", **_overview(request))
