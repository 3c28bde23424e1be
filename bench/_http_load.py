"""The benches' HTTP load: keep-alive clients on plain sockets, clients run together, a served API.

bench/api.py drives `chronicle serve` and the bare read server with these; a client's own CPU is
kept small because it shares the machine's cores with the server it measures.
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A port nobody listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_clients(clients: int, commands: int, make_client: Callable[[int], Callable[[int], None]]) -> dict[str, float]:
    """Run `clients` threads, each sending `commands` commands; the latencies and the rate."""
    latencies: list[float] = []
    lock = threading.Lock()
    barrier = threading.Barrier(clients + 1)
    errors: list[BaseException] = []

    def worker(index: int) -> None:
        try:
            send = make_client(index)
        except BaseException as exc:  # noqa: BLE001 - reported after the run, never a hang
            errors.append(exc)
            barrier.abort()
            return
        mine = []
        try:
            barrier.wait()
            for i in range(commands):
                start = time.perf_counter()
                send(i)
                mine.append(time.perf_counter() - start)
        except BaseException as exc:  # noqa: BLE001 - reported after the run
            errors.append(exc)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    try:
        barrier.wait()
    except threading.BrokenBarrierError:
        for t in threads:
            t.join()
        raise errors[0] from None
    started = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise errors[0]
    latencies.sort()
    return {
        "commands": len(latencies),
        "rate": len(latencies) / elapsed,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1000,
    }


@contextmanager
def serving(command: list[str], url: str) -> Iterator[str]:
    """Run a server command (it gets the port as its last argument); yield its base URL once ready."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env.update(DATABASE_URL=url, CHRONICLE_POOL_MAX_SIZE="20")
    server = subprocess.Popen([*command, str(port)], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise RuntimeError("server did not start")
            time.sleep(0.1)
        yield base
    finally:
        server.terminate()
        server.wait(timeout=15)


class Client:
    """One keep-alive HTTP/1.1 connection with a bearer key, spoken over a plain socket.

    The clients share the server's two cores, so a client's CPU is CPU the server does not get:
    httpx costs about 1 ms a request, the standard library's http.client about 0.2 ms (it parses
    headers with the email package); this writes one buffer and reads the status line and
    Content-Length, about 0.05 ms. It reopens the connection when a response closes it.
    """

    def __init__(self, base: str, token: str) -> None:
        host, port = base.removeprefix("http://").split(":")
        self.address = (host, int(port))
        self.head = f"Host: {host}:{port}\r\nAuthorization: Bearer {token}\r\n".encode()
        self.sock: socket.socket | None = None
        self.pending = b""

    def _connect(self) -> socket.socket:
        sock = socket.create_connection(self.address, timeout=30)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock, self.pending = sock, b""
        return sock

    def _receive(self, sock: socket.socket) -> None:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection mid-response")
        self.pending += chunk

    def send(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """Send one request, read the answer; raise unless it is a 2xx."""
        sock = self.sock or self._connect()
        request = [f"{method} {path} HTTP/1.1\r\n".encode(), self.head]
        if body is not None:
            data = json.dumps(body).encode()
            request += [b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(data), data]
        else:
            request.append(b"\r\n")
        sock.sendall(b"".join(request))
        while b"\r\n\r\n" not in self.pending:
            self._receive(sock)
        head, _, self.pending = self.pending.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        fields = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            fields[name.strip().lower()] = value.strip()
        if b"content-length" not in fields:
            raise RuntimeError(f"{method} {path}: a response without Content-Length: {head[:200]!r}")
        length = int(fields[b"content-length"])
        while len(self.pending) < length:
            self._receive(sock)
        content, self.pending = self.pending[:length], self.pending[length:]
        if fields.get(b"connection", b"").lower() == b"close":
            sock.close()
            self.sock = None
        if not 200 <= status < 300:
            raise RuntimeError(f"{method} {path}: {status} {content[:200]!r}")
        return json.loads(content)
