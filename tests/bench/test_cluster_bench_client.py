"""The cluster bench's HTTP client against a small asyncio server on 127.0.0.1: a
keep-alive connection reused, a closed one reopened, a chunked reply refused."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from bench.cluster.client import Conn, HttpError

Reply = Callable[[bytes], bytes]  # the request's head and body → the raw reply


def reply(status: int, body: bytes, *extra: str) -> bytes:
    head = [f"HTTP/1.1 {status} X", f"Content-Length: {len(body)}", *extra]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


async def serve(answer: Reply, client: Callable[[Conn], Awaitable[Any]]) -> Any:
    """Run client(conn) against a server answering each request with answer(request)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                raw = answer(head + await reader.readexactly(length))
                writer.write(raw)
                await writer.drain()
                if b"Connection: close" in raw:
                    break
        except asyncio.IncompleteReadError:
            pass
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        conn = Conn("127.0.0.1", port, "t0ken")
        try:
            return await client(conn)
        finally:
            conn.close()


def test_requests_share_one_kept_connection_and_send_json_with_the_token() -> None:
    seen: list[bytes] = []

    def answer(request: bytes) -> bytes:
        seen.append(request)
        return reply(200, b'{"ok": true}')

    async def client(conn: Conn) -> list[tuple[int, bytes]]:
        return [await conn.request("PUT", "/v1/x", {"a": i}) for i in range(3)]

    answers = asyncio.run(serve(answer, client))
    assert answers == [(200, b'{"ok": true}')] * 3
    assert b"Authorization: Bearer t0ken\r\n" in seen[0]
    assert json.loads(seen[2].split(b"\r\n\r\n", 1)[1]) == {"a": 2}


def test_a_connection_the_server_closed_is_opened_again() -> None:
    async def client(conn: Conn) -> tuple[list[int], int]:
        first = await conn.request("GET", "/a")
        second = await conn.request("GET", "/b")
        return [first[0], second[0]], conn.connects

    statuses, connects = asyncio.run(serve(lambda _: reply(304, b"", "Connection: close"), client))
    assert statuses == [304, 304]
    assert connects == 2


def test_a_chunked_reply_is_an_error_not_a_hang() -> None:
    def answer(_: bytes) -> bytes:
        return b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"

    async def client(conn: Conn) -> Any:
        return await conn.request("GET", "/stream", timeout=5)

    with pytest.raises(HttpError, match="chunked"):
        asyncio.run(serve(answer, client))
