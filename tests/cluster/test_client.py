"""hostos.cluster.client against a small scripted HTTP server: what it sends, what it makes of
each answer, and how it fails."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from hostos.cluster import client
from hostos.cluster.client import BadURL, CallFailed, Client, ServerError, Unreachable

TOKEN = "hn1.cn001.secret"


class Scripted(ThreadingHTTPServer):
    """Answers every request with `answer` (status, content type, body); keeps what came."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.answer: tuple[int, str, bytes] = (200, "application/json", b"{}")
        self.seen: list[tuple[str, str, dict[str, str], bytes]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class Handler(BaseHTTPRequestHandler):
    server: Scripted

    def _any(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        self.server.seen.append((self.command, self.path, dict(self.headers), body))
        status, kind, data = self.server.answer
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = _any

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[Scripted]:
    scripted = Scripted()
    threading.Thread(target=scripted.serve_forever, args=(0.05,), daemon=True).start()
    yield scripted
    scripted.shutdown()
    scripted.server_close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- the base URL ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "want"),
    [
        ("http://10.0.0.1:8080", (False, "10.0.0.1", 8080, "")),
        ("http://server/", (False, "server", None, "")),
        ("https://server:8443/hostos/", (True, "server", 8443, "/hostos")),
    ],
)
def test_base_url(url: str, want: tuple[bool, str, int | None, str]) -> None:
    assert client.base_url(url) == want


@pytest.mark.parametrize("url", ["10.0.0.1:8080", "ftp://server", "http://", "http://s:port"])
def test_bad_base_urls(url: str) -> None:
    with pytest.raises(BadURL, match="expected http://HOST"):
        Client(url)


# -- what goes out --------------------------------------------------------------------------


def test_a_call_sends_json_and_the_token(server: Scripted) -> None:
    server.answer = (200, "application/json", b'{"ok": true}')
    answer = Client(server.url + "/", TOKEN).call("PUT", "/v1/x", {"a": 1}, {"X-Extra": "y"})
    assert answer == {"ok": True}
    method, path, headers, body = server.seen[0]
    assert (method, path, json.loads(body)) == ("PUT", "/v1/x", {"a": 1})
    assert headers["Authorization"] == f"Bearer {TOKEN}"
    assert headers["Content-Type"] == "application/json"
    assert headers["Accept"] == "application/json"
    assert headers["Connection"] == "close"
    assert headers["X-Extra"] == "y"


def test_no_token_no_body_no_header(server: Scripted) -> None:
    Client(server.url).call("GET", "/v1/x")
    _, _, headers, body = server.seen[0]
    assert "Authorization" not in headers and "Content-Type" not in headers and body == b""


def test_a_path_prefix_is_kept(server: Scripted) -> None:
    Client(server.url + "/hostos").call("GET", "/v1/x")
    assert server.seen[0][1] == "/hostos/v1/x"


# -- what comes back ------------------------------------------------------------------------

ERRORS = [
    # status, content type, body → kind, value
    (409, "application/json", b'{"kind": "conflict", "value": "no slot"}', "conflict", "no slot"),
    (403, "application/json", b'{"value": "not yours"}', "error", "not yours"),
    (404, "application/json", b'{"kind": "not_found"}', "not_found", "Not Found"),
    (502, "text/html", b"<html>proxy</html>", "error", "Bad Gateway"),
    (500, "application/json", b'["odd"]', "error", "Internal Server Error"),
]


@pytest.mark.parametrize(("status", "kind_header", "body", "kind", "value"), ERRORS)
def test_an_error_status_is_a_server_error_in_the_servers_words(
    server: Scripted, status: int, kind_header: str, body: bytes, kind: str, value: str
) -> None:
    server.answer = (status, kind_header, body)
    with pytest.raises(ServerError) as caught:
        Client(server.url, TOKEN).call("GET", "/v1/x")
    error = caught.value
    assert (error.status, error.kind, error.value) == (status, kind, value)
    assert str(error) == f"{server.url}: {status} {kind}: {value}"
    assert error.problem == f"{status} {kind}: {value}"


def test_request_gives_any_status_back(server: Scripted) -> None:
    server.answer = (304, "application/json", b"")
    reply = Client(server.url).request("GET", "/v1/x")
    assert (reply.status, reply.ok, reply.body) == (304, False, b"")


def test_an_empty_answer_is_none(server: Scripted) -> None:
    server.answer = (204, "application/json", b"")
    assert Client(server.url).call("POST", "/v1/x") is None


def test_an_answer_that_is_not_json(server: Scripted) -> None:
    server.answer = (200, "text/html", b"<html>")
    with pytest.raises(CallFailed, match=r"^http://127\.0\.0\.1:\d+: not a JSON answer") as caught:
        Client(server.url).call("GET", "/v1/x")
    assert not isinstance(caught.value, (ServerError, Unreachable))


# -- no answer ------------------------------------------------------------------------------


def test_nothing_listening_is_unreachable() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(Unreachable) as caught:
        Client(url, TOKEN).call("GET", "/v1/x")
    assert str(caught.value) == f"{url}: Connection refused"
    assert caught.value.problem == "Connection refused"


def test_a_silent_server_times_out() -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)  # accepted into the backlog, never answered
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        with pytest.raises(Unreachable, match="timed out"):
            Client(url, timeout=5).call("GET", "/v1/x", timeout=0.2)


def test_the_token_is_never_shown(server: Scripted) -> None:
    server.answer = (401, "application/json", b'{"kind": "unauthorized", "value": "no"}')
    made = Client(server.url, TOKEN)
    with pytest.raises(ServerError) as caught:
        made.call("GET", "/v1/x")
    assert TOKEN not in str(caught.value) and TOKEN not in repr(made)
