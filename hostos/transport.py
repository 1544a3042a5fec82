"""HTTP to a local service on the standard library: an engine's API socket, the supervisor's
status socket.

One `http.client.HTTPConnection` over a unix socket (`UnixHTTPConnection`) and one reader of
the addresses engines are given (`unix:///path`, `tcp://host:port`, `http://host:port`, no
TLS); every socket gets the connection's timeout for its connect and each read.  Only
`http.client` and `socket`: no requests or urllib3, so a no-op `hostos apply` and
`hostos status` stay fast.
"""

from __future__ import annotations

import http.client
import socket
from typing import Literal

ADDRESS_FORMS = "unix:///path, tcp://host:port or http://host:port"

Kind = Literal["unix", "tcp"]


class UnixHTTPConnection(http.client.HTTPConnection):
    """An HTTPConnection over a unix socket; timeout applies to the connect and each read."""

    def __init__(self, path: str, timeout: float | None) -> None:
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.unix_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def parse(url: str) -> tuple[Kind, str]:
    """("unix", path) or ("tcp", "host:port") of an address; ValueError for anything else."""
    if url.startswith("unix://"):
        return "unix", url.removeprefix("unix://")
    if url.startswith(("tcp://", "http://")):
        where = url.split("://", 1)[1].rstrip("/")
        host, _, port = where.rpartition(":")
        if host and port.isdigit():
            return "tcp", where
    raise ValueError(f"cannot use the address {url} (want {ADDRESS_FORMS})")


def connection(url: str, timeout: float | None) -> http.client.HTTPConnection:
    """A connection (not yet open) to the service at url; ValueError for a bad address."""
    kind, where = parse(url)
    if kind == "unix":
        return UnixHTTPConnection(where, timeout)
    host, _, port = where.rpartition(":")
    return http.client.HTTPConnection(host.strip("[]"), int(port), timeout=timeout)
