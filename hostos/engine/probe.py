"""Ask an engine's socket whether it answers: GET /_ping, with no HTTP library.

Picking an engine (hostos.engine.connect) pings each candidate socket with a short
timeout, and the podman adapter reads the libpod API version from the same answer.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

PING_TIMEOUT = 1.0


@dataclass(frozen=True)
class Pong:
    """What an engine's /_ping said about it."""

    api_version: str | None  # the Docker API version (podman's compat API too)
    libpod_version: str | None  # set only by podman


def ping(url: str, timeout: float = PING_TIMEOUT) -> Pong | None:
    """GET /_ping over the engine's socket; None when nothing answers with 200."""
    try:
        with _open(url, timeout) as sock:
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: engine\r\n\r\n")
            reply = _read_head(sock)
    except (OSError, ValueError):
        return None
    lines = reply.decode("latin-1").split("\r\n")
    parts = lines[0].split()
    if len(parts) < 2 or parts[1] != "200":
        return None
    headers = {}
    for line in lines[1:]:
        key, _, value = line.partition(":")
        headers[key.strip().lower()] = value.strip()
    return Pong(headers.get("api-version"), headers.get("libpod-api-version"))


def _open(url: str, timeout: float) -> socket.socket:
    if url.startswith("unix://"):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(url.removeprefix("unix://"))
        except OSError:
            sock.close()
            raise
        return sock
    if url.startswith(("tcp://", "http://")):
        host, _, port = url.split("://", 1)[1].rstrip("/").rpartition(":")
        return socket.create_connection((host, int(port)), timeout=timeout)
    raise ValueError(f"cannot ping {url}")


def _read_head(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data and len(data) < 65536:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data.split(b"\r\n\r\n", 1)[0]
