"""The overview page: the log's head and safe position, what holds it back, command rate, lag.

It polls its live part (htmx) every two seconds; each poll adds a lag sample to the chart.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse

from console.auth import Viewer
from console.web import need, page, state_of
from service_layer import operations

router = APIRouter()
# Lag samples this process took: (unix time, {projection: lag in events}); ten minutes at most.
SAMPLES: deque[tuple[float, dict[str, int]]] = deque(maxlen=300)
SAMPLE_EVERY_SECONDS = 2.0
CHART_WIDTH, CHART_HEIGHT = 480, 120


def _overview(request: Request) -> dict[str, Any]:
    """The overview's figures, with a lag sample taken if the last is older than SAMPLE_EVERY_SECONDS."""
    state = state_of(request)
    view = operations.projections_view(state.pool, state.store)
    now = time.time()
    if not SAMPLES or now - SAMPLES[-1][0] >= SAMPLE_EVERY_SECONDS:
        SAMPLES.append((now, {p["name"]: p["lag_events"] for p in view["projections"]}))
    return {"log": view["log"], "projections": view["projections"],
            "commands_per_minute": operations.command_rate(state.pool, 60), "chart": lag_chart(list(SAMPLES), now)}


def lag_chart(samples: list[tuple[float, dict[str, int]]], now: float, minutes: int = 10) -> dict[str, Any]:
    """Polylines (SVG points) of each projection's lag over the last `minutes`, scaled to the chart."""
    start = now - minutes * 60
    recent = [(t, lags) for t, lags in samples if t >= start]
    top = max([1] + [lag for _, lags in recent for lag in lags.values()])
    names = sorted({name for _, lags in recent for name in lags})
    lines = []
    for name in names:
        points = " ".join(
            f"{(t - start) / (minutes * 60) * CHART_WIDTH:.1f},{CHART_HEIGHT - lags[name] / top * (CHART_HEIGHT - 10):.1f}"
            for t, lags in recent if name in lags)
        lines.append({"name": name, "points": points})
    return {"width": CHART_WIDTH, "height": CHART_HEIGHT, "top": top, "minutes": minutes, "lines": lines,
            "samples": len(recent)}


@router.get("/", response_class=HTMLResponse)
def overview(request: Request, _: Viewer = Depends(need("operate"))) -> HTMLResponse:
    """The overview page (operators: it shows what GET /v1/projections and /v1/log/blockers show)."""
    return page(request, "overview.html", **_overview(request))


@router.get("/overview/live", response_class=HTMLResponse)
def overview_live(request: Request, _: Viewer = Depends(need("operate"))) -> HTMLResponse:
    """The overview's live part alone, for htmx to swap in."""
    return page(request, "overview_live.html", **_overview(request))
