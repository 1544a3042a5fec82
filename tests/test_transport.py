"""hostos.transport: the addresses it reads and HTTP over a unix socket, with timeouts."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pytest

from hostos import transport
from hostos.node.status import NodeStatus
from hostos.node.status_server import StatusServer
from hostos.transport import UnixHTTPConnection


@pytest.mark.parametrize(
    ("url", "want"),
    [
        ("unix:///run/docker.sock", ("unix", "/run/docker.sock")),
        ("tcp://127.0.0.1:2375", ("tcp", "127.0.0.1:2375")),
        ("http://engine:2375/", ("tcp", "engine:2375")),
        ("tcp://[::1]:2375", ("tcp", "[::1]:2375")),
    ],
)
def test_parse(url: str, want: tuple[str, str]) -> None:
    assert transport.parse(url) == want


@pytest.mark.parametrize("url", ["ssh://node1", "tcp://host", "tcp://:2375", "/run/x.sock", ""])
def test_parse_refuses(url: str) -> None:
    with pytest.raises(ValueError, match="want unix:///path, tcp://host:port or http://host:port"):
        transport.parse(url)


def test_connection_kinds() -> None:
    unix = transport.connection("unix:///run/x.sock", 2.0)
    assert isinstance(unix, UnixHTTPConnection)
    assert (unix.unix_path, unix.timeout) == ("/run/x.sock", 2.0)
    tcp = transport.connection("tcp://[::1]:2375", 3.0)
    assert not isinstance(tcp, UnixHTTPConnection)
    assert (tcp.host, tcp.port, tcp.timeout) == ("::1", 2375, 3.0)


def test_a_request_over_a_unix_socket(tmp_path: Path) -> None:
    status = NodeStatus(role="demo", generation=3)
    server = StatusServer(str(tmp_path / "s.sock"), lambda: status)
    server.start()
    conn = UnixHTTPConnection(server.path, 5.0)
    try:
        conn.request("GET", "/v1/status")
        response = conn.getresponse()
        assert response.status == 200
        assert NodeStatus.from_json(json.loads(response.read())) == status
    finally:
        conn.close()
        server.stop()


def test_no_socket_is_an_os_error_and_leaves_nothing_open(tmp_path: Path) -> None:
    conn = UnixHTTPConnection(str(tmp_path / "absent.sock"), 1.0)
    with pytest.raises(FileNotFoundError):
        conn.request("GET", "/")
    assert conn.sock is None


def test_a_silent_service_times_out(tmp_path: Path) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as silent:
        silent.bind(str(tmp_path / "silent.sock"))
        silent.listen(1)  # accepts into the backlog, never answers
        conn = UnixHTTPConnection(str(tmp_path / "silent.sock"), 0.2)
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            conn.request("GET", "/")
            conn.getresponse()
        conn.close()
    assert time.monotonic() - started < 1.0
