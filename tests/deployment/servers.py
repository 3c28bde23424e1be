"""Servers the deployment tests start themselves: Debian's pgbouncer, and PostgreSQL clusters.

Both refuse to run as root, so as root they run as the `postgres` OS user, in temporary
folders that user owns. Each is stopped by its own process id.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg

from tests.conftest import TEST_LOGIN
from tests.support import stop

PGBOUNCER = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
PG_BIN = Path("/usr/lib/postgresql/15/bin")
RUN_AS = "postgres"


def free_port() -> int:
    """A TCP port nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_server_user(argv: list[str]) -> list[str]:
    """`argv` run as the postgres OS user when we are root (servers refuse root)."""
    return ["runuser", "-u", RUN_AS, "--", *argv] if os.geteuid() == 0 else argv


@contextmanager
def server_dir(prefix: str) -> Iterator[Path]:
    """A temporary folder the server user owns, removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        if os.geteuid() == 0:
            user = pwd.getpwnam(RUN_AS)
            os.chown(path, user.pw_uid, user.pw_gid)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def wait_accepting(url: str, process: subprocess.Popen | None = None, timeout: float = 30) -> None:
    """Wait until `url` accepts a connection (fail early if `process` exited)."""
    deadline = time.monotonic() + timeout
    while True:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            psycopg.connect(url, connect_timeout=2).close()
            return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@contextmanager
def pgbouncer(server_host: str, server_port: int, *, pool_size: int = 8) -> Iterator[int]:
    """PgBouncer in transaction mode on a free port, for every database of the server; its port.

    `pool_size` server connections per database and user: fewer than the clients, so every
    client's transactions run on sessions other clients used before.
    """
    port = free_port()
    with server_dir("chronicle-pgbouncer-") as folder:
        user = pwd.getpwuid(os.geteuid()).pw_name
        # Trust still names its users: the tests' own, the server's, and the tests' application login.
        logins = (user, RUN_AS, TEST_LOGIN)
        (folder / "userlist.txt").write_text("".join(f'"{name}" ""\n' for name in logins))
        (folder / "pgbouncer.ini").write_text(
            "[databases]\n"
            f"* = host={server_host} port={server_port}\n"
            "[pgbouncer]\n"
            f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
            f"auth_type = trust\nauth_file = {folder}/userlist.txt\n"
            "pool_mode = transaction\n"
            f"default_pool_size = {pool_size}\nmax_client_conn = 1000\n"
            f"logfile = {folder}/pgbouncer.log\n"
        )
        argv = [PGBOUNCER, str(folder / "pgbouncer.ini")]
        if os.geteuid() == 0:
            argv = [PGBOUNCER, "-u", RUN_AS, str(folder / "pgbouncer.ini")]
        process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        try:
            wait_accepting(f"postgresql://127.0.0.1:{port}/postgres", process)
            yield port
        finally:
            stop(process)


def _run_as_server_user(*argv: str) -> None:
    subprocess.run(_as_server_user([*argv]), check=True, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)


def _pg_ctl(data: Path, action: str, *extra: str) -> None:
    _run_as_server_user(str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(data.parent / f"{data.name}.log"),
                        "-w", "-t", "60", action, *extra)


class Cluster:
    """A PostgreSQL server of our own: its data folder and port."""

    def __init__(self, data: Path, port: int) -> None:
        self.data, self.port = data, port

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def start(self) -> None:
        _pg_ctl(self.data, "start", "-o", f"-p {self.port} -k {self.data.parent}")
        wait_accepting(self.url())

    def stop(self) -> None:
        """Stop the server (fast: its sessions end, nothing is lost)."""
        _pg_ctl(self.data, "stop", "-m", "fast")


@contextmanager
def primary_and_replica() -> Iterator[tuple[Cluster, Cluster]]:
    """A primary made by initdb and a streaming replica made by pg_basebackup -R, each on a free port.

    Trust authentication on 127.0.0.1 (initdb's default lets replication connect from there too).
    """
    with server_dir("chronicle-replication-") as base:
        primary = Cluster(base / "primary", free_port())
        replica = Cluster(base / "replica", free_port())
        _run_as_server_user(str(PG_BIN / "initdb"), "-D", str(primary.data), "-U", "postgres",
                            "--auth=trust", "--no-sync")
        settings = ("listen_addresses = '127.0.0.1'\nwal_level = replica\nmax_wal_senders = 5\n"
                    "hot_standby = on\nfsync = off\nsynchronous_commit = off\nfull_page_writes = off\n")
        with open(primary.data / "postgresql.conf", "a") as conf:
            conf.write(settings)
        started: list[Cluster] = []
        try:
            primary.start()
            started.append(primary)
            _run_as_server_user(str(PG_BIN / "pg_basebackup"), "-h", "127.0.0.1", "-p", str(primary.port),
                                "-U", "postgres", "-D", str(replica.data), "-R", "-X", "stream", "--no-sync")
            replica.start()
            started.append(replica)
            yield primary, replica
        finally:
            for cluster in reversed(started):
                try:
                    cluster.stop()
                except subprocess.CalledProcessError:
                    pass  # stopped by the test already
