"""A real TCP proxy in front of the server that, when armed, drops the connection after a request.

It forwards every byte both ways. Armed, it waits until the server starts answering the next
request (so the command has run), then closes the client's socket instead of passing the answer
on: the client sees a dropped connection and cannot know whether its command ran.
"""

from __future__ import annotations

import socket
import threading


class DroppingProxy:
    """A proxy on 127.0.0.1 to `upstream_port`; `arm(n)` drops the next n answers."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.armed = 0
        self.dropped = 0
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def arm(self, answers: int = 1) -> None:
        """Drop the connection carrying each of the next `answers` answers."""
        with self._lock:
            self.armed += answers

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
        threading.Thread(target=_pipe, args=(client, upstream), daemon=True).start()
        try:
            while data := upstream.recv(65536):
                with self._lock:
                    drop = self.armed > 0
                    if drop:
                        self.armed -= 1
                        self.dropped += 1
                if drop:
                    break
                client.sendall(data)
        except OSError:
            pass
        finally:
            _close(client)
            _close(upstream)

    def close(self) -> None:
        self.listener.close()


def _pipe(source: socket.socket, target: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            target.sendall(data)
    except OSError:
        pass
    finally:
        _close(target)


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()
