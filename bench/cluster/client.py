"""The agents' HTTP/1.1 client: one keep-alive connection over asyncio streams, JSON bodies,
a bearer token.  As small as the load needs (thousands of agents in one process): replies
with a Content-Length (all that `hostos serve` sends), no chunked bodies, no TLS."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.parse
from typing import Any

IDLE_REUSE = 4.0  # seconds: a connection idle longer is not reused (uvicorn closes at 5 s)


class HttpError(Exception):
    """A request that got no answer: connection refused or reset, a timeout."""


class Conn:
    """One keep-alive connection to a server, for one caller; reconnects when the server
    closed it (or it sat idle past the server's keep-alive time)."""

    def __init__(self, host: str, port: int, token: str) -> None:
        self.host, self.port = host, port
        self.auth = f"Authorization: Bearer {token}\r\n".encode()
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.used = 0.0
        self.connects = 0
        self.lock = asyncio.Lock()

    @classmethod
    def to(cls, url: str, token: str) -> Conn:
        parts = urllib.parse.urlsplit(url)
        return cls(str(parts.hostname), int(parts.port or 80), token)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
        timeout: float = 60.0,
    ) -> tuple[int, bytes]:
        """(status, body) of one request; HttpError when no answer came."""
        async with self.lock:
            try:
                return await asyncio.wait_for(self._request(method, path, body, headers), timeout)
            except TimeoutError:
                self.close()
                raise HttpError(
                    f"{method} {path.split('?')[0]}: no answer in {timeout:g} s"
                ) from None

    async def _request(
        self, method: str, path: str, body: Any, headers: dict[str, str] | None
    ) -> tuple[int, bytes]:
        payload = b"" if body is None else json.dumps(body).encode()
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\n{extra}"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
        )
        message = head.encode() + self.auth + b"\r\n" + payload
        reused = self.writer is not None and time.monotonic() - self.used < IDLE_REUSE
        if not reused:
            self.close()
        for attempt in (1, 2):
            try:
                return await self._exchange(message)
            except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                self.close()
                if reused and attempt == 1:  # the server closed it just now: once more
                    continue
                raise HttpError(
                    f"{method} {path.split('?')[0]}: {type(exc).__name__}: {exc}"
                ) from None
        raise AssertionError("unreachable")

    async def _exchange(self, message: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
            self.connects += 1
        assert self.reader is not None
        self.writer.write(message)
        await self.writer.drain()
        status, data, keep = await _response(self.reader)
        self.used = time.monotonic()
        if not keep:
            self.close()
        return status, data


async def _response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    """(status, body, whether the connection stays open) of the reply on reader."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    fields = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name:
            fields[name.strip().lower()] = value.strip()
    if "chunked" in fields.get("transfer-encoding", "").lower():
        raise ValueError("a chunked reply (this client reads Content-Length bodies only)")
    data = await reader.readexactly(int(fields.get("content-length", "0")))
    return int(lines[0].split()[1]), data, fields.get("connection", "").lower() != "close"
