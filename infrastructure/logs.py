"""Chronicle's logs: structlog, rendered as JSON or for the console, with the stdlib bridged in.

Every line carries the correlation and causation ids bound to the current context (an HTTP
request, a projected batch); library logs (uvicorn, dramatiq, psycopg) come out the same way.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, Mapping
from typing import Any

import structlog
import structlog.tracebacks
from pydantic_core import to_json

from infrastructure.config import Settings, get_settings

# Marks the root handler Chronicle installed, so a second set-up replaces it instead of doubling it.
_HANDLER_NAME = "chronicle"
# A batch log names at most this many correlation ids (and says how many there were).
MAX_IDS_PER_LINE = 50


def _shared_processors() -> list[Any]:
    """What every line gets, whether it comes from structlog or from the stdlib."""
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]


def _drop_color_message(logger: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
    """uvicorn adds an ANSI-coloured copy of its message as an extra: noise in a log line."""
    event.pop("color_message", None)
    return event


def resolved_format(setting: str) -> str:
    """The format lines are written in: `auto` is JSON unless stderr is a terminal.

    A collector reads JSON; only a person at a terminal wants the aligned text, which also costs
    a request's line several times as much to render.
    """
    if setting == "auto":
        return "console" if sys.stderr.isatty() else "json"
    return setting


def _json_line(event: dict[str, Any], **_: Any) -> str:
    """A line's JSON, by pydantic-core (the codec of the rest of Chronicle; the json module costs
    a request's line about twice as much). A value it cannot encode is written as its repr."""
    return to_json(event, fallback=repr).decode()


def _renderer(log_format: str) -> list[Any]:
    # Tracebacks never show local variables: they may hold keys and connection strings.
    if log_format == "json":
        tracebacks = structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
        return [structlog.processors.ExceptionRenderer(tracebacks), structlog.processors.JSONRenderer(_json_line)]
    return [structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty(), exception_formatter=structlog.dev.plain_traceback)]


def configure_logging(settings: Settings | None = None, *, replace: bool = False) -> None:
    """Route structlog and the stdlib's loggers through one stderr handler in CHRONICLE_LOG_FORMAT.

    `replace` removes every other root handler too (dramatiq's worker processes install their own).
    """
    settings = settings or get_settings()
    log_format = resolved_format(settings.chronicle_log_format)
    level = settings.chronicle_log_level.upper()
    structlog.configure(
        processors=[
            *_shared_processors(),
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        # Foreign (stdlib) records: their `extra=` fields become keys of the line.
        foreign_pre_chain=[*_shared_processors(), structlog.stdlib.ExtraAdder(), _drop_color_message],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *_renderer(log_format)],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        if replace or old.get_name() == _HANDLER_NAME:
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(True)
    skip_unrendered_record_fields()


def skip_unrendered_record_fields() -> None:
    """Spare every log record the caller's frame, thread and process look-ups: no line renders them.

    The stdlib's documented optimisation (logging HOWTO, "Optimization"); each API request logs a
    line in the event loop, and those look-ups were a fifth of its cost.
    """
    logging._srcfile = None  # no sys._getframe walk for the caller's file, line and function
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False


def batch_context(
    projection: str, partitions: Iterable[int] | None, metadatas: Iterable[Mapping[str, Any]]
) -> dict[str, Any]:
    """The fields a projected batch logs: its projection, partitions, and its events' ids of origin.

    Correlation and causation ids are deduplicated in log order and capped at MAX_IDS_PER_LINE.
    """
    correlations: dict[str, None] = {}
    causations: dict[str, None] = {}
    for metadata in metadatas:
        correlation = metadata.get("correlation_id")
        if correlation is not None:
            correlations[correlation] = None
        causation = metadata.get("causation_id")
        if causation is not None:
            causations[causation] = None
    return {
        "projection": projection,
        "partitions": None if partitions is None else list(partitions),
        "correlation_ids": list(correlations)[:MAX_IDS_PER_LINE],
        "correlation_id_count": len(correlations),
        "causation_ids": list(causations)[:MAX_IDS_PER_LINE],
    }
