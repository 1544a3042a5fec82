"""HTTP and JSON to `hostos serve` on the standard library's `http.client`: the one client of
the node agent, the admin's commands and `hostos tokens issue`.

- The base URL is checked up front (`BadURL`: http://HOST[:PORT] or https://…, a path prefix
  kept); the token goes only into the `Authorization: Bearer` header, never into a log line
  or an exception's text.
- One connection per request (`Connection: close`): a restarted server, another replica
  behind the same address or a changed route costs nothing to follow.
- Failures: `Unreachable` when no answer came (refused, reset, timed out), `ServerError` for
  a status outside 2xx with the server's own words (`{"kind", "value"}`), `CallFailed` (their
  base) for an answer that is not JSON.  All are `RuntimeFailure`s naming the server; the
  text without the server is `problem`.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from hostos.errors import RuntimeFailure

TIMEOUT = 30.0


class BadURL(ValueError):
    """A server address this client cannot use."""


class CallFailed(RuntimeFailure):
    """A call to the server that did not bring its answer."""

    def __init__(self, server: str, problem: str) -> None:
        super().__init__(f"{server}: {problem}")
        self.server, self.problem = server, problem


class Unreachable(CallFailed):
    """No answer from the server (refused, reset, timed out)."""


class ServerError(CallFailed):
    """The server answered with an error status."""

    def __init__(self, server: str, status: int, kind: str, value: str) -> None:
        super().__init__(server, f"{status} {kind}: {value}")
        self.status, self.kind, self.value = status, kind, value


@dataclass(frozen=True)
class Reply:
    status: int
    reason: str  # the status line's phrase ("Not Found")
    body: bytes = b""

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def text(self) -> str:
        return self.body.decode(errors="replace")


def base_url(url: str) -> tuple[bool, str, int | None, str]:
    """(https?, host, port, path prefix) of a server's base URL; BadURL for anything else."""
    bad = BadURL(f"{url}: expected http://HOST[:PORT] or https://…")
    try:
        parts = urlsplit(url.rstrip("/"))
        port = parts.port
    except ValueError:  # a port that is not a number
        raise bad from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise bad
    return parts.scheme == "https", parts.hostname, port, parts.path


class Client:
    def __init__(self, server: str, token: str | None = None, timeout: float = TIMEOUT) -> None:
        self.https, self.host, self.port, self.prefix = base_url(server)
        self.server = server.rstrip("/")
        self.timeout = timeout
        self._token = token

    def __repr__(self) -> str:
        return f"Client({self.server!r})"  # never the token

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> Any:
        """The decoded JSON answer of method path (body sent as JSON); None for no body."""
        return self.answer(self.request(method, path, body, headers, timeout))

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> Reply:
        """One exchange, whatever its status; Unreachable when none came."""
        sent = {"Accept": "application/json", "Connection": "close", **(headers or {})}
        if self._token:
            sent["Authorization"] = f"Bearer {self._token}"
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            sent["Content-Type"] = "application/json"
        kind = http.client.HTTPSConnection if self.https else http.client.HTTPConnection
        connection = kind(
            self.host, self.port, timeout=self.timeout if timeout is None else timeout
        )
        try:
            connection.request(method, self.prefix + path, body=data, headers=sent)
            response = connection.getresponse()
            reply = Reply(response.status, response.reason, response.read())
        except (OSError, http.client.HTTPException) as exc:
            raise Unreachable(self.server, _why(exc)) from None
        finally:
            connection.close()
        return reply

    def answer(self, reply: Reply) -> Any:
        """The JSON of a 2xx reply (None when empty); ServerError for any other status."""
        if not reply.ok:
            raise self.error(reply)
        try:
            return json.loads(reply.body) if reply.body else None
        except ValueError as exc:
            raise CallFailed(self.server, f"not a JSON answer ({exc})") from None

    def error(self, reply: Reply) -> ServerError:
        """The server's words for an error reply: its `{"kind", "value"}` when it sent one."""
        try:
            data = json.loads(reply.body)
        except ValueError:
            data = None
        reason = reply.reason or f"HTTP {reply.status}"
        if isinstance(data, dict):
            kind, value = data.get("kind", "error"), data.get("value", reason)
            return ServerError(self.server, reply.status, str(kind), str(value))
        return ServerError(self.server, reply.status, "error", reason)


def _why(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__
