"""A small HTTP/1.1 JSON client for an engine's API socket, on the standard library only.

The adapters' read calls (ping, list, inspect, image lookup) go through this client
rather than docker-py or podman-py: importing either SDK pulls in requests, urllib3,
charset_normalizer and idna, about 0.15 s of a no-op `hostos apply` that needs only
a few GETs.  The SDKs stay for what mutates or streams, imported on first use.

- Addresses: `unix:///path`, `tcp://host:port` or `http://host:port` (no TLS, as the
  adapters configure the SDKs); the connections are hostos.transport's.
- Keep-alive: idle connections wait in a small pool; each request takes one (or opens
  one), so threads never share a connection, and a connection left by a thread that
  has ended is reused by the next rather than leaked.
- A GET on a pooled connection that the engine closed meanwhile (idle timeout, engine
  restart) is sent once more on a fresh connection; nothing else is retried.
- Every failure is an EngineError naming the engine and the call ("docker: inspect
  container web: No such container: web"); a reply outside `ok` is a StatusError
  carrying the HTTP status and the engine's own message.
"""

from __future__ import annotations

import http.client
import json
import os
import threading
import urllib.parse
from collections.abc import Iterable, Iterator, Mapping
from typing import IO, Any

from hostos import __version__, transport
from hostos.engine.base import EngineError

DEFAULT_TIMEOUT = 60.0
CHUNK = 65536  # the most one read of a streamed reply returns
MAX_IDLE = 8  # pooled keep-alive connections; more in flight at once are closed after use
OK = (200,)
REQUESTS_SAFE = "!$&'()*+,/:;=@[]~"  # what requests leaves unquoted in a path, bar # ? %
_STALE = (
    http.client.RemoteDisconnected,
    http.client.BadStatusLine,
    BrokenPipeError,
    ConnectionResetError,
    ConnectionAbortedError,
)


Body = bytes | IO[bytes] | None


class StatusError(EngineError):
    """The engine answered with an HTTP status the call did not accept."""

    def __init__(self, message: str, status: int, explanation: str) -> None:
        super().__init__(message)
        self.status = status
        self.explanation = explanation


class Reply:
    """A whole HTTP reply: status, headers and body."""

    def __init__(self, status: int, headers: Mapping[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return json.loads(self.body)

    def explanation(self) -> str:
        """The engine's error message: `message` (or libpod's `cause`) of a JSON error body,
        else the start of the body as text."""
        try:
            body = self.json()
        except ValueError:
            text = self.text.strip()[:200]
            return f"HTTP {self.status}: {text}" if text else f"HTTP {self.status}"
        if isinstance(body, dict):
            return str(body.get("message") or body.get("cause") or body)
        return str(body)


class EngineHTTP:
    """JSON requests to one engine API address, under a path prefix (`/v1.41`)."""

    def __init__(
        self,
        url: str,
        *,
        engine: str,
        service: str,
        prefix: str = "",
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        """engine: names the engine in errors ("docker"); service: what did not answer
        ("dockerd", "the podman service")."""
        self.url = url
        self.engine = engine
        self.service = service
        self.prefix = prefix.rstrip("/")
        self.timeout = timeout
        _check(url, engine)
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()
        self._closed = False

    def get_json(
        self,
        path: str,
        what: str,
        *,
        params: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> Any:
        """GET path and decode its JSON body; any status but 200 is an error."""
        reply = self.request("GET", path, what, params=params, timeout=timeout)
        try:
            return reply.json()
        except ValueError as exc:
            raise EngineError(f"{self.engine}: {what}: unreadable reply ({exc})") from None

    def request(
        self,
        method: str,
        path: str,
        what: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Body = None,
        headers: Mapping[str, str] | None = None,
        ok: tuple[int, ...] = OK,
        timeout: float | None = None,
    ) -> Reply:
        """One call, its reply read whole; a status outside `ok` raises StatusError.
        body: bytes, or a file opened for reading in binary (sent as it is read)."""
        target, sent = self._target_and_headers(path, params, body, headers)
        reply = self._send(method, target, body, sent, what, timeout)
        if reply.status not in ok:
            explanation = reply.explanation()
            raise StatusError(f"{self.engine}: {what}: {explanation}", reply.status, explanation)
        return reply

    def stream(
        self,
        method: str,
        path: str,
        what: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Body = None,
        headers: Mapping[str, str] | None = None,
        ok: tuple[int, ...] = OK,
        timeout: float | None = None,
    ) -> Iterator[bytes]:
        """One call whose reply body comes in pieces as the engine sends them (events,
        logs, pull progress), on a connection of its own that is closed at the end.
        timeout: seconds to wait for each piece; None waits as long as it takes."""
        target, sent = self._target_and_headers(path, params, body, headers)
        conn = self._new()
        try:
            try:
                conn.connect()
                assert conn.sock is not None
                conn.sock.settimeout(timeout)
                conn.request(method, target, body=body, headers=dict(sent))
                response = conn.getresponse()
                if response.status not in ok:
                    reply = Reply(response.status, {}, response.read())
                    explanation = reply.explanation()
                    raise StatusError(
                        f"{self.engine}: {what}: {explanation}", response.status, explanation
                    )
                while chunk := response.read1(CHUNK):
                    yield chunk
            except TimeoutError:
                raise EngineError(
                    f"{self.engine}: {what}: {self.service} did not answer in time"
                ) from None
            except (OSError, http.client.HTTPException) as exc:
                raise EngineError(
                    f"{self.engine}: {what}: cannot reach {self.service} on "
                    f"{self.url} ({_why(exc)})"
                ) from None
        finally:
            conn.close()

    def _target_and_headers(
        self,
        path: str,
        params: Mapping[str, str] | None,
        body: Body,
        headers: Mapping[str, str] | None,
    ) -> tuple[str, dict[str, str]]:
        target = self.prefix + path
        if params:
            target += "?" + urllib.parse.urlencode(params)
        sent = {"User-Agent": f"hostos/{__version__}", **(headers or {})}
        if body is not None and not isinstance(body, bytes):
            sent["Content-Length"] = str(os.fstat(body.fileno()).st_size - body.tell())
        return target, sent

    def close(self) -> None:
        """Close the idle connections; requests in flight close theirs when done."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    # -- connections -------------------------------------------------------------

    def _send(
        self,
        method: str,
        target: str,
        body: Body,
        headers: Mapping[str, str],
        what: str,
        timeout: float | None,
    ) -> Reply:
        conn, reused = self._take()
        try:
            try:
                reply = self._exchange(conn, method, target, body, headers, timeout)
            except _STALE:
                if not (reused and method in ("GET", "HEAD") and body is None):
                    raise
                conn.close()  # the engine closed the idle connection: once more, afresh
                conn, reused = self._new(), False
                reply = self._exchange(conn, method, target, body, headers, timeout)
        except TimeoutError:
            conn.close()
            raise EngineError(
                f"{self.engine}: {what}: {self.service} did not answer in time"
            ) from None
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise EngineError(
                f"{self.engine}: {what}: cannot reach {self.service} on {self.url} ({_why(exc)})"
            ) from None
        self._give(conn)
        return reply

    def _exchange(
        self,
        conn: http.client.HTTPConnection,
        method: str,
        target: str,
        body: Body,
        headers: Mapping[str, str],
        timeout: float | None,
    ) -> Reply:
        if conn.sock is None:
            conn.connect()
        assert conn.sock is not None
        conn.sock.settimeout(self.timeout if timeout is None else timeout)
        conn.request(method, target, body=body, headers=dict(headers))
        response = conn.getresponse()
        data = response.read()
        if response.will_close:
            conn.close()
        return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, data)

    def _take(self) -> tuple[http.client.HTTPConnection, bool]:
        with self._lock:
            if self._idle:
                return self._idle.pop(), True
        return self._new(), False

    def _new(self) -> http.client.HTTPConnection:
        return transport.connection(self.url, self.timeout)

    def _give(self, conn: http.client.HTTPConnection) -> None:
        if conn.sock is not None:  # not closed by a `Connection: close` reply
            with self._lock:
                if not self._closed and len(self._idle) < MAX_IDLE:
                    self._idle.append(conn)
                    return
        conn.close()


def _check(url: str, engine: str) -> None:
    """An EngineError naming the engine when url is not an address it can be reached at."""
    try:
        transport.parse(url)
    except ValueError as exc:
        raise EngineError(f"{engine}: {exc}") from None


def _why(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def quote(segment: str, safe: str = "/:") -> str:
    """A name, ID or image reference put into a path, percent-encoded as docker-py does
    (`/` and `:` kept); podman-py leaves what requests leaves (pass REQUESTS_SAFE)."""
    return urllib.parse.quote(segment, safe=safe)


def json_lines(chunks: Iterable[bytes], what: str, engine: str) -> Iterator[Any]:
    """The JSON values of a streamed reply: one or more per line (podman may pack several
    into one line), lines split across chunks put back together."""
    decoder = json.JSONDecoder()
    pending = b""
    for chunk in chunks:
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            yield from _values(decoder, line, what, engine)
    yield from _values(decoder, pending, what, engine)


def _values(decoder: json.JSONDecoder, line: bytes, what: str, engine: str) -> Iterator[Any]:
    text = line.decode(errors="replace").strip()
    while text:
        try:
            value, end = decoder.raw_decode(text)
        except ValueError as exc:
            raise EngineError(f"{engine}: {what}: unreadable reply ({exc})") from None
        yield value
        text = text[end:].lstrip()
