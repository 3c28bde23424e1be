"""An embedded PostgreSQL (the `pgserver` wheel), for machines where none is configured."""

from __future__ import annotations

import fcntl
import logging
import os
import warnings
from pathlib import Path
from typing import IO

# The file a running `chronicle up` holds locked in its data folder, naming its pid and URL.
UP_LOCK_NAME = "chronicle-up.lock"


class DataDirInUse(Exception):
    """Another `chronicle up` serves from this data folder (it holds its lock)."""

    def __init__(self, data_dir: Path, holder: str) -> None:
        self.data_dir = data_dir
        self.holder = holder
        super().__init__(f"{data_dir} is in use by a running Chronicle ({holder or 'pid unknown'})")


def start_embedded_postgres(data_dir: Path) -> str:
    """Start (or reuse) a PostgreSQL server whose data lives in `data_dir`; return its URL.

    The server stops when this process exits; its data stays for the next start. pgserver's
    own lines (initdb, pg_ctl, and a warning at import) go to its `pgserver` logger, which the
    command line keeps quiet unless --verbose (cli/output.py).
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        import pgserver  # imported here: it is only needed when no DATABASE_URL is set
    for warning in caught:
        logging.getLogger("pgserver").info("%s", warning.message)

    data_dir.mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(data_dir, cleanup_mode="stop")
    _servers.append(server)  # keep a handle so the server lives as long as the process
    return server.get_uri()


def claim_data_dir(data_dir: Path, label: str) -> None:
    """Lock `data_dir` for this process's `chronicle up` (until it exits), naming it by `label`.

    Raises DataDirInUse, naming the holder, when another running `chronicle up` holds it:
    two servers on one embedded PostgreSQL would stop it under each other.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    handle: IO[str] = open(data_dir / UP_LOCK_NAME, "a+", encoding="utf-8")  # noqa: SIM115 - held till exit
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip()
        handle.close()
        raise DataDirInUse(data_dir, holder) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()}, {label}\n")
    handle.flush()
    _locks.append(handle)  # the lock lives as long as the process


_servers: list[object] = []
_locks: list[IO[str]] = []
