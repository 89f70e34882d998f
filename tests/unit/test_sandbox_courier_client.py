"""The sandbox's own HTTP client for its callbacks (sandbox/courier_client.py), against raw servers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import httpx
import pytest
import uvloop

from sandbox.courier_client import CourierClient


@asynccontextmanager
async def raw_server(handler: Handler) -> AsyncIterator[tuple[str, list[bytes]]]:
    """A server that hands each connection to ``handler``; yields its URL and the requests read."""
    requests: list[bytes] = []

    async def recording(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await handler(_Recorder(reader, requests), writer)
        finally:
            writer.close()

    server = await asyncio.start_server(recording, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/courier", requests
    finally:
        server.close()


class _Recorder:
    """Reads one request (head and Content-Length body) at a time and records it."""

    def __init__(self, reader: asyncio.StreamReader, requests: list[bytes]) -> None:
        self.reader, self.requests = reader, requests

    async def request(self) -> bytes:
        head = await self.reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        raw = head + await self.reader.readexactly(length)
        self.requests.append(raw)
        return raw


Handler = Callable[[_Recorder, asyncio.StreamWriter], Awaitable[None]]


def answering(*answers: bytes, then_close: bool = False) -> Handler:
    async def handler(reader: _Recorder, writer: asyncio.StreamWriter) -> None:
        for answer in answers:
            await reader.request()
            writer.write(answer)
            await writer.drain()
        if not then_close:
            await asyncio.sleep(10)

    return handler


CHUNKED = (
    b"HTTP/1.1 503 Busy\r\ntransfer-encoding: chunked\r\n"
    b"content-type: text/plain; charset=latin-1\r\n\r\n"
    b"4\r\nnot \r\n5;x=y\r\nready\r\n0\r\nx-trailer: 1\r\n\r\n"
)
OK_JSON = b'HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 11\r\n\r\n{"ok":true}'


async def test_posts_reuse_one_kept_alive_connection() -> None:
    connections = 0

    async def handler(reader: _Recorder, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await answering(OK_JSON, OK_JSON, OK_JSON)(reader, writer)

    async with raw_server(handler) as (url, requests):
        client = CourierClient(url, timeout_s=2)
        for n in range(3):
            reply = await client.post("/webhooks/pos", b'{"n":%d}' % n, {"webhook-id": "e1"})
            assert (reply.status, reply.body, reply.charset) == (200, b'{"ok":true}', None)
        client.close()
    assert connections == 1
    head = requests[0].split(b"\r\n")
    assert head[0] == b"POST /courier/webhooks/pos HTTP/1.1"
    assert b"webhook-id: e1" in head and b"content-length: 7" in head
    assert requests[2].endswith(b'{"n":2}')


@pytest.mark.parametrize(
    ("answer", "body", "charset"),
    [
        (b"HTTP/1.1 100 Continue\r\n\r\n" + OK_JSON, b'{"ok":true}', None),
        (CHUNKED, b"not ready", "latin-1"),
        (b"HTTP/1.1 204 No Content\r\n\r\n", b"", None),
    ],
)
async def test_answers_are_read_whole(answer: bytes, body: bytes, charset: str | None) -> None:
    async def handler(reader: _Recorder, writer: asyncio.StreamWriter) -> None:
        await reader.request()
        for n in range(0, len(answer), 7):  # in small pieces
            writer.write(answer[n : n + 7])
            await writer.drain()
            await asyncio.sleep(0.001)
        await asyncio.sleep(10)

    async with raw_server(handler) as (url, _):
        client = CourierClient(url, timeout_s=2)
        reply = await client.post("/webhooks/jnt", b"bizContent=x", {})
        client.close()
    assert (reply.body, reply.charset) == (body, charset)


async def test_an_answer_without_length_ends_when_the_server_closes() -> None:
    answer = b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\naccepted"
    async with raw_server(answering(answer, then_close=True)) as (url, _):
        client = CourierClient(url, timeout_s=2)
        first = await client.post("/webhooks/pos", b"{}", {})
        second = await client.post("/webhooks/pos", b"{}", {})  # on a new connection
        client.close()
    assert first.body == second.body == b"accepted"


async def test_failures_are_named_as_httpx_names_them() -> None:
    async with raw_server(answering(then_close=True)) as (url, _):
        pass
    client = CourierClient(url, timeout_s=2)
    with pytest.raises(httpx.ConnectError, match="Cannot connect to host 127.0.0.1:"):
        await client.post("/webhooks/pos", b"{}", {})

    async def hang_up(reader: _Recorder, writer: asyncio.StreamWriter) -> None:
        await reader.request()

    async with raw_server(hang_up) as (url, _):
        client = CourierClient(url, timeout_s=2)
        with pytest.raises(httpx.RemoteProtocolError, match="Server disconnected"):
            await client.post("/webhooks/pos", b"{}", {})

    async def cut_short(reader: _Recorder, writer: asyncio.StreamWriter) -> None:
        await reader.request()
        writer.write(OK_JSON[:-3])

    async with raw_server(cut_short) as (url, _):
        client = CourierClient(url, timeout_s=2)
        with pytest.raises(httpx.ReadError, match="not completed"):
            await client.post("/webhooks/pos", b"{}", {})

    async def trickle_then_stall(reader: _Recorder, writer: asyncio.StreamWriter) -> None:
        await reader.request()
        for piece in (b"HTTP/1.1 ", b"200 ", b"OK", b"\r\n"):  # each sooner than the timeout
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(0.15)
        await asyncio.sleep(10)

    async with raw_server(trickle_then_stall) as (url, _):
        client = CourierClient(url, timeout_s=0.25)
        started = asyncio.get_running_loop().time()
        with pytest.raises(httpx.ReadTimeout):
            await client.post("/webhooks/pos", b"{}", {})
        assert asyncio.get_running_loop().time() - started > 0.5
        client.close()


def test_the_client_runs_on_uvloop_as_the_sandbox_does() -> None:
    """uvicorn runs the sandbox on uvloop, whose transports are not asyncio's classes."""

    async def three_posts() -> list[int]:
        async with raw_server(answering(OK_JSON, OK_JSON, OK_JSON)) as (url, _):
            client = CourierClient(url, timeout_s=2)
            statuses = [(await client.post("/webhooks/jnt", b"x", {})).status for _ in range(3)]
            client.close()
            return statuses

    assert uvloop.run(three_posts()) == [200, 200, 200]
