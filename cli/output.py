"""Where the command line's output goes: data on stdout, everything else on stderr.

Library chatter (the embedded PostgreSQL's initdb and pg_ctl runs, httpx's request lines) is
shown only with `chronicle --verbose`; the embedded PostgreSQL's is always kept in
`$CHRONICLE_DATA_DIR/embedded-postgres.log`. Their warnings and errors still reach stderr.
"""

from __future__ import annotations

import logging
from pathlib import Path

from rich.console import Console

# Loggers whose INFO lines are noise to a CLI user: the file (if any) keeps them.
EMBEDDED_LOGGER = "pgserver"
HTTP_LOGGERS = ("httpx", "httpcore")
EMBEDDED_LOG_NAME = "embedded-postgres.log"

err_console = Console(stderr=True, highlight=False)
"""Notices, progress and errors: stderr, so that stdout carries only a command's data."""

_state = {"verbose": False}


class _DirFileHandler(logging.FileHandler):
    """A log file opened (and its folder made) only when the first line is written."""

    def _open(self):  # noqa: ANN202 - logging's signature
        Path(self.baseFilename).parent.mkdir(parents=True, exist_ok=True)
        return super()._open()


class _WarningsToRoot(logging.Handler):
    """Hands a quieted logger's warnings and errors to the root handlers (stderr) after all."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)

    def emit(self, record: logging.LogRecord) -> None:
        for handler in logging.getLogger().handlers:
            if record.levelno >= handler.level:
                handler.handle(record)


def configure_output(verbose: bool, data_dir: str) -> None:
    """Quiet the libraries' INFO lines unless `verbose`; keep the embedded PostgreSQL's in a file.

    Called once per command, after the root logger is set up (infrastructure/logs.py).
    """
    _state["verbose"] = verbose
    embedded = logging.getLogger(EMBEDDED_LOGGER)
    for handler in list(embedded.handlers):
        embedded.removeHandler(handler)
    log_file = _DirFileHandler(Path(data_dir).resolve() / EMBEDDED_LOG_NAME, delay=True, encoding="utf-8")
    log_file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    embedded.addHandler(log_file)
    embedded.setLevel(logging.INFO)
    embedded.propagate = verbose
    if not verbose:
        embedded.addHandler(_WarningsToRoot())
    for name in HTTP_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET if verbose else logging.WARNING)


def is_verbose() -> bool:
    """Whether `--verbose` was given: library chatter goes to stderr too."""
    return _state["verbose"]
