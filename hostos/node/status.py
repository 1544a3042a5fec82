"""The supervisor's local status API: HTTP over a unix socket, read by `hostos status`."""

from __future__ import annotations

import http.client
import json
import os
import socketserver
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from typing import Any

from hostos.transport import UnixHTTPConnection

SOCKET_DIR = "/run/hostos"
STATUS_PATH = "/v1/status"


def socket_path(namespace: str = "") -> str:
    name = f"supervisor-{namespace}.sock" if namespace else "supervisor.sock"
    return os.path.join(SOCKET_DIR, name)


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


class StatusServer:
    """Serves GET /v1/status with whatever `snapshot()` returns, as JSON."""

    def __init__(self, path: str, snapshot: Callable[[], dict[str, Any]]) -> None:
        self.path = path
        handler = _handler(snapshot)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if os.path.exists(path):
            os.unlink(path)  # a socket left by a supervisor that died
        self.server = _Server(path, handler)
        os.chmod(path, 0o600)
        self.thread = threading.Thread(
            target=self.server.serve_forever, name="status-api", daemon=True
        )

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        if os.path.exists(self.path):
            os.unlink(self.path)


def _handler(snapshot: Callable[[], dict[str, Any]]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path != STATUS_PATH:
                self.send_error(404)
                return
            body = json.dumps(snapshot()).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def address_string(self) -> str:
            return "local"

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


def read_status(path: str, timeout: float = 2.0) -> dict[str, Any] | None:
    """The running supervisor's status, or None when no supervisor answers on path."""
    if not os.path.exists(path):
        return None
    conn = UnixHTTPConnection(path, timeout)
    try:
        conn.request("GET", STATUS_PATH)
        response = conn.getresponse()
        if response.status != 200:
            return None
        data: dict[str, Any] = json.loads(response.read())
        return data
    except (OSError, ValueError, http.client.HTTPException):
        return None
    finally:
        conn.close()
