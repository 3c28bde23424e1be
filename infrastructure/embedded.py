"""An embedded PostgreSQL (the `pgserver` wheel), for machines where none is configured."""

from __future__ import annotations

from pathlib import Path


def start_embedded_postgres(data_dir: Path) -> str:
    """Start (or reuse) a PostgreSQL server whose data lives in `data_dir`; return its URL.

    The server stops when this process exits; its data stays for the next start.
    """
    import pgserver  # imported here: it is only needed when no DATABASE_URL is set

    data_dir.mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(data_dir, cleanup_mode="stop")
    _servers.append(server)  # keep a handle so the server lives as long as the process
    return server.get_uri()


_servers: list[object] = []
