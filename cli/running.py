"""Whether a `chronicle up` can listen where it is asked to, or finds Chronicle already there."""

from __future__ import annotations

import errno
import socket

import httpx


def port_holder(host: str, port: int) -> str | None:
    """None if `host:port` is free to listen on; else a sentence naming what holds it.

    It binds the address for a moment (as uvicorn will), and if that fails asks the holder
    for /openapi.json: a Chronicle answers with its title.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: TIME_WAIT is no holder
        try:
            probe.bind((host, port))
            return None
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                return f"cannot listen on {host}:{port}: {exc.strerror}"
    url = f"http://{_client_host(host)}:{port}"
    if _is_chronicle(url):
        return (f"Chronicle is already running on {url} (its API answers there). Use that one, "
                "stop it first, or start another with --port.")
    return f"{host}:{port} is already in use by another program (not Chronicle); start Chronicle with --port."


def _client_host(host: str) -> str:
    """The address a client on this machine reaches a server listening on `host` at."""
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def _is_chronicle(url: str) -> bool:
    try:
        answer = httpx.get(f"{url}/openapi.json", timeout=2)
        return answer.status_code == 200 and answer.json().get("info", {}).get("title") == "Chronicle"
    except (httpx.HTTPError, ValueError, AttributeError):
        return False
