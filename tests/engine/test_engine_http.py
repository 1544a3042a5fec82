"""hostos.engine.http and hostos.engine.probe against a small fake engine on a unix socket
(no real engine)."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hostos.engine.base import EngineError
from hostos.engine.http import EngineHTTP, StatusError, json_lines, quote
from hostos.engine.probe import Pong, ping

Handler = Callable[[str], tuple[int, bytes, bool]]  # request line → status, body, close


class FakeEngine:
    """Answers each request with handler(request line); counts connections and requests."""

    def __init__(self, path: Path, handler: Handler, headers: tuple[str, ...] = ()) -> None:
        self.path = path
        self.handler = handler
        self.headers = headers  # more header lines in every reply
        self.connections = 0
        self.requests: list[str] = []
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(str(path))
        self.server.listen(8)
        self.open: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            self.connections += 1
            self.open.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        data = b""
        with conn:
            while True:
                while b"\r\n\r\n" not in data:
                    try:
                        chunk = conn.recv(65536)
                    except OSError:
                        return
                    if not chunk:
                        return
                    data += chunk
                head, data = data.split(b"\r\n\r\n", 1)
                line = head.split(b"\r\n", 1)[0].decode()
                self.requests.append(line)
                status, body, close = self.handler(line)
                headers = [
                    f"HTTP/1.1 {status} X",
                    "Content-Type: application/json",
                    f"Content-Length: {len(body)}",
                    *self.headers,
                ]
                if close:
                    headers.append("Connection: close")
                try:
                    conn.sendall(("\r\n".join(headers) + "\r\n\r\n").encode() + body)
                except OSError:  # the client gave up (a timeout test) or the test ended
                    return
                if close:
                    return

    def drop_idle(self) -> None:
        """Close every connection, as an engine does with idle keep-alive ones."""
        for conn in self.open:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()
        self.open.clear()

    def close(self) -> None:
        self.server.close()
        self.drop_idle()


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[Callable[[Handler], FakeEngine]]:
    made: list[FakeEngine] = []

    def start(handler: Handler) -> FakeEngine:
        made.append(FakeEngine(tmp_path / f"engine{len(made)}.sock", handler))
        return made[-1]

    yield start
    for engine in made:
        engine.close()


def client(engine: FakeEngine, timeout: float = 5.0) -> EngineHTTP:
    return EngineHTTP(
        f"unix://{engine.path}",
        engine="docker",
        service="dockerd",
        prefix="/v1.41",
        timeout=timeout,
    )


def ok_json(line: str) -> tuple[int, bytes, bool]:
    return 200, json.dumps({"line": line}).encode(), False


def hang(line: str) -> tuple[int, bytes, bool]:
    time.sleep(2)
    return ok_json(line)


def test_prefix_params_and_keep_alive(fake: Callable[[Handler], FakeEngine]) -> None:
    engine = fake(ok_json)
    http = client(engine)
    first = http.get_json(
        "/containers/json", "list containers", params={"all": "1", "filters": '{"label": ["a=b"]}'}
    )
    assert first["line"] == (
        "GET /v1.41/containers/json?all=1&filters=%7B%22label%22%3A+%5B%22a%3Db%22%5D%7D HTTP/1.1"
    )
    http.get_json("/_ping", "ping")
    assert engine.connections == 1  # one connection, kept alive
    http.close()


def test_concurrent_requests_use_their_own_connections(
    fake: Callable[[Handler], FakeEngine],
) -> None:
    def slow(line: str) -> tuple[int, bytes, bool]:
        time.sleep(0.2)
        return ok_json(line)

    engine = fake(slow)
    http = client(engine)
    threads = [threading.Thread(target=http.get_json, args=(f"/c/{i}", "x")) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert engine.connections == 3 and len(engine.requests) == 3
    http.get_json("/again", "x")
    assert engine.connections == 3  # an idle one was reused
    http.close()


def test_a_connection_the_engine_closed_is_replaced(fake: Callable[[Handler], FakeEngine]) -> None:
    engine = fake(ok_json)
    http = client(engine)
    http.get_json("/one", "x")
    engine.drop_idle()
    time.sleep(0.05)
    assert http.get_json("/two", "x")["line"].startswith("GET /v1.41/two ")
    assert engine.connections == 2


def test_connection_close_replies_are_not_reused(fake: Callable[[Handler], FakeEngine]) -> None:
    engine = fake(lambda line: (200, b"{}", True))
    http = client(engine)
    http.get_json("/one", "x")
    http.get_json("/two", "x")
    assert engine.connections == 2


def test_a_status_outside_ok_names_the_call_and_the_engine_message(
    fake: Callable[[Handler], FakeEngine],
) -> None:
    engine = fake(lambda line: (404, b'{"message": "No such container: web"}', False))
    http = client(engine)
    with pytest.raises(StatusError) as caught:
        http.get_json("/containers/web/json", "inspect container web")
    assert str(caught.value) == "docker: inspect container web: No such container: web"
    assert caught.value.status == 404
    assert http.request("GET", "/x", "x", ok=(200, 404)).status == 404


def test_a_non_json_error_body_is_shown_as_text(fake: Callable[[Handler], FakeEngine]) -> None:
    engine = fake(lambda line: (500, b"boom\n", False))
    with pytest.raises(StatusError, match=r"^docker: list containers: HTTP 500: boom$"):
        client(engine).get_json("/containers/json", "list containers")


def test_an_unreadable_body_is_an_engine_error(fake: Callable[[Handler], FakeEngine]) -> None:
    engine = fake(lambda line: (200, b"{not json", False))
    with pytest.raises(EngineError, match=r"^docker: list containers: unreadable reply"):
        client(engine).get_json("/containers/json", "list containers")


def test_no_engine_means_cannot_reach(tmp_path: Path) -> None:
    http = EngineHTTP(
        f"unix://{tmp_path / 'absent.sock'}", engine="podman", service="the podman service"
    )
    with pytest.raises(EngineError, match=r"^podman: ping: cannot reach the podman service on "):
        http.request("GET", "/_ping", "ping")


def test_a_silent_engine_times_out(fake: Callable[[Handler], FakeEngine]) -> None:
    engine = fake(hang)
    started = time.monotonic()
    with pytest.raises(EngineError, match=r"^docker: find web: dockerd did not answer in time$"):
        client(engine, timeout=0.3).get_json("/containers/json", "find web")
    assert time.monotonic() - started < 1.5


def test_unsupported_addresses_are_refused() -> None:
    with pytest.raises(EngineError, match="ssh://node1"):
        EngineHTTP("ssh://node1", engine="docker", service="dockerd")
    EngineHTTP("tcp://127.0.0.1:2375", engine="docker", service="dockerd")


def test_quote_keeps_slashes_and_colons() -> None:
    assert quote("localhost/hostos/busybox:latest") == "localhost/hostos/busybox:latest"
    assert quote("busybox@sha256:ab") == "busybox%40sha256:ab"
    assert quote("a b#c?") == "a%20b%23c%3F"


def test_json_lines_joins_lines_split_across_chunks_and_splits_packed_ones() -> None:
    chunks = [b'{"a": 1}\n{"b"', b': 2} {"c": 3}\n', b"\n", b'{"d": [4]}']
    assert list(json_lines(chunks, "events", "podman")) == [
        {"a": 1},
        {"b": 2},
        {"c": 3},
        {"d": [4]},
    ]


def test_json_lines_names_the_call_when_a_line_is_not_json() -> None:
    with pytest.raises(EngineError, match=r"^podman: events: unreadable reply"):
        list(json_lines([b'{"a": 1}\nnot json\n'], "events", "podman"))


# -- the probe ----------------------------------------------------------------------------------


def test_ping_reads_the_api_versions(tmp_path: Path) -> None:
    headers = ("Api-Version: 1.41", "Libpod-Api-Version: 4.3.1")
    engine = FakeEngine(tmp_path / "podman.sock", lambda line: (200, b"OK", False), headers)
    try:
        assert ping(f"unix://{engine.path}") == Pong("1.41", "4.3.1")
        assert engine.requests == ["GET /_ping HTTP/1.1"]
    finally:
        engine.close()


def test_ping_without_libpod_is_docker(fake: Callable[[Handler], FakeEngine]) -> None:
    engine = fake(lambda line: (200, b"OK", True))
    assert ping(f"unix://{engine.path}") == Pong(None, None)


def test_ping_is_none_unless_the_engine_answers_200(
    fake: Callable[[Handler], FakeEngine], tmp_path: Path
) -> None:
    engine = fake(lambda line: (500, b"down", False))
    assert ping(f"unix://{engine.path}") is None
    assert ping(f"unix://{tmp_path / 'absent.sock'}") is None
    assert ping("ssh://node1") is None
    assert ping("tcp://127.0.0.1:notaport") is None


def test_ping_gives_up_on_a_silent_engine(fake: Callable[[Handler], FakeEngine]) -> None:
    engine = fake(hang)
    started = time.monotonic()
    assert ping(f"unix://{engine.path}", timeout=0.3) is None
    assert time.monotonic() - started < 1.5
