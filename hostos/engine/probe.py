"""Ask an engine's socket whether it answers: GET /_ping over hostos.transport.

Picking an engine (hostos.engine.connect) pings each candidate socket with a short
timeout, and the podman adapter reads the libpod API version from the same answer.
"""

from __future__ import annotations

import http.client
from dataclasses import dataclass

from hostos import transport

PING_TIMEOUT = 1.0


@dataclass(frozen=True)
class Pong:
    """What an engine's /_ping said about it."""

    api_version: str | None  # the Docker API version (podman's compat API too)
    libpod_version: str | None  # set only by podman


def ping(url: str, timeout: float = PING_TIMEOUT) -> Pong | None:
    """GET /_ping over the engine's socket; None when nothing answers with 200."""
    try:
        conn = transport.connection(url, timeout)
    except ValueError:
        return None
    try:
        conn.request("GET", "/_ping")
        response = conn.getresponse()  # the status and headers: the body says only "OK"
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()
    if response.status != 200:
        return None
    return Pong(response.getheader("Api-Version"), response.getheader("Libpod-Api-Version"))
