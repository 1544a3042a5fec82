"""The supervisor's status socket: HTTP over a unix socket, serving its NodeStatus as JSON.

Apart from hostos.node.status (the values and their reader), so that `hostos plan`,
`apply` and the cluster agent, which only read a status, do not import http.server.
"""

from __future__ import annotations

import json
import os
import socketserver
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from typing import Any

from hostos.node.status import STATUS_PATH, NodeStatus


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


class StatusServer:
    """Serves GET /v1/status: the JSON form of what `snapshot()` returns."""

    def __init__(self, path: str, snapshot: Callable[[], NodeStatus]) -> None:
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


def _handler(snapshot: Callable[[], NodeStatus]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path != STATUS_PATH:
                self.send_error(404)
                return
            body = json.dumps(snapshot().to_json()).encode()
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
