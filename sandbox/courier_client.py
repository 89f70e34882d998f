"""The HTTP/1.1 client the sandbox POSTs its partner callbacks with (one host: the courier service).

Why not aiohttp: its ``ClientSession`` took about 230 µs of CPU per callback POST (request and
response objects, multidicts, a writer task, timers), this plain asyncio protocol about 50, and the
sandbox sends three callbacks per lifecycle of the benchmark, on the two cores the services are
measured on. It does only what callbacks need, as the aiohttp session did it:

- POSTs with a ``Content-Length`` body over kept-alive connections, at most as many as POSTs in flight
  (``World`` bounds those); a connection idle for ``KEEPALIVE_S`` is closed rather than reused, so
  it is never reused while the server is closing it (servers keep idle connections longer);
- answers with ``Content-Length``, chunked, or read until the server closes;
- ``timeout_s`` to connect and between two reads of the answer (aiohttp's ``sock_connect`` and
  ``sock_read``);
- failures raised as the httpx exceptions ``shared.http_client.mapped_error`` names aiohttp's:
  ``ConnectError``, ``ConnectTimeout``, ``ReadTimeout``, ``RemoteProtocolError``, ``ReadError``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import cast
from urllib.parse import urlsplit

import httpx

from shared.http_client import KEEPALIVE_S


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes
    charset: str | None  # from the answer's content-type, as aiohttp's ``response.charset``


class CourierClient:
    def __init__(self, base_url: str, timeout_s: float) -> None:
        parts = urlsplit(base_url)
        self._url = base_url.rstrip("/")
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._ssl = True if parts.scheme == "https" else None
        self._prefix = parts.path.rstrip("/")
        self._host_header = parts.netloc
        self._timeout = timeout_s
        self._idle: list[_Connection] = []

    async def post(self, path: str, body: bytes, headers: dict[str, str]) -> Reply:
        conn = self._reusable() or await self._connect(path)
        lines = [f"POST {self._prefix}{path} HTTP/1.1", f"host: {self._host_header}",
                 f"content-length: {len(body)}", "user-agent: ketanmu-sandbox"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        try:
            reply, keep_alive = await conn.exchange(
                ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
            )
        except BaseException:  # failed, timed out or cancelled: the connection is unusable
            conn.close()
            raise
        if keep_alive and not conn.closed:
            conn.idle_since = asyncio.get_running_loop().time()
            self._idle.append(conn)
        else:
            conn.close()
        return reply

    def _reusable(self) -> _Connection | None:
        now = asyncio.get_running_loop().time()
        while self._idle:
            conn = self._idle.pop()
            if not conn.closed and now - conn.idle_since < KEEPALIVE_S:
                return conn
            conn.close()
        return None

    async def _connect(self, path: str) -> _Connection:
        loop = asyncio.get_running_loop()
        conn = _Connection(loop, self._timeout)
        try:
            await asyncio.wait_for(
                loop.create_connection(lambda: conn, self._host, self._port, ssl=self._ssl),
                self._timeout,
            )
        except TimeoutError:  # before OSError: TimeoutError is one
            raise httpx.ConnectTimeout(f"Connection timeout to host {self._url}{path}") from None
        except OSError as exc:  # refused, unreachable, unknown host
            reason = exc.strerror or str(exc)
            raise httpx.ConnectError(
                f"Cannot connect to host {self._host}:{self._port} ssl:default [{reason}]"
            ) from None
        return conn

    def close(self) -> None:
        for conn in self._idle:
            conn.close()
        self._idle.clear()


class _Connection(asyncio.Protocol):
    """One TCP connection: one request, then its answer, at a time."""

    def __init__(self, loop: asyncio.AbstractEventLoop, read_timeout_s: float) -> None:
        self.loop = loop
        self.read_timeout_s = read_timeout_s
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self.buffer = bytearray()
        self.waiter: asyncio.Future[tuple[Reply, bool]] | None = None
        self.last_read = 0.0
        self.timer: asyncio.TimerHandle | None = None

    async def exchange(self, request: bytes) -> tuple[Reply, bool]:
        """Send ``request``; the answer and whether the connection may be reused."""
        assert self.transport is not None
        self.buffer.clear()
        self.waiter = self.loop.create_future()
        self.last_read = self.loop.time()
        self.timer = self.loop.call_at(self.last_read + self.read_timeout_s, self._check_timeout)
        self.transport.write(request)
        try:
            return await self.waiter
        finally:
            self.timer.cancel()
            self.waiter = None

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    # --- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # a TCP transport (uvloop's is not an asyncio.Transport subclass: no isinstance check)
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self.last_read = self.loop.time()
        if self.waiter is not None and not self.waiter.done():
            self._answer(eof=False)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            if exc is not None:
                self.waiter.set_exception(httpx.ReadError(str(exc) or type(exc).__name__))
            elif b"\r\n\r\n" not in self.buffer:  # closed before answering
                self.waiter.set_exception(httpx.RemoteProtocolError("Server disconnected"))
            elif not self._answer(eof=True):  # closed in the middle of the body
                self.waiter.set_exception(httpx.ReadError("Response payload is not completed"))

    # --- the answer ---------------------------------------------------------------------------

    def _check_timeout(self) -> None:
        if self.waiter is None or self.waiter.done():
            return
        due = self.last_read + self.read_timeout_s
        if self.loop.time() < due:  # data arrived meanwhile: wait from there
            self.timer = self.loop.call_at(due, self._check_timeout)
            return
        self.waiter.set_exception(httpx.ReadTimeout("Timeout on reading data from socket"))
        self.close()

    def _answer(self, eof: bool) -> bool:
        """Resolve the waiter if the buffer holds the whole answer (``eof``: nothing more comes)."""
        assert self.waiter is not None
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return False
        try:
            status, headers, keep_alive = _head(bytes(self.buffer[:end]))
            if status < 200:  # informational (100 Continue...): the answer follows
                del self.buffer[: end + 4]
                return self._answer(eof)
            body = _body(status, headers, bytes(self.buffer[end + 4 :]), eof)
        except ValueError as exc:
            self.waiter.set_exception(httpx.ReadError(f"malformed answer: {exc}"))
            self.close()
            return True
        if body is None:
            return False
        self.waiter.set_result((Reply(status, body, _charset(headers)), keep_alive and not eof))
        return True


def _head(raw: bytes) -> tuple[int, dict[str, str], bool]:
    lines = raw.decode("latin-1").split("\r\n")
    version, status = lines[0].split(" ", 2)[:2]
    if not version.startswith("HTTP/1.") or not status.isdigit():
        raise ValueError(f"status line {lines[0][:100]!r}")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    connection = headers.get("connection", "").lower()
    keep_alive = connection != "close" and (version == "HTTP/1.1" or connection == "keep-alive")
    return int(status), headers, keep_alive


def _body(status: int, headers: dict[str, str], rest: bytes, eof: bool) -> bytes | None:
    """The body, or None while incomplete."""
    if status in (204, 304):
        return b""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return _dechunk(rest)
    if "content-length" in headers:
        length = int(headers["content-length"])
        if length < 0:
            raise ValueError(f"content-length {length}")
        return rest[:length] if len(rest) >= length else None
    return rest if eof else None  # read until the server closes


def _dechunk(data: bytes) -> bytes | None:
    chunks, pos = [], 0
    while (eol := data.find(b"\r\n", pos)) >= 0:
        size = int(data[pos:eol].split(b";")[0], 16)
        if size == 0:  # the last chunk, then trailers (if any) up to an empty line
            return b"".join(chunks) if data.find(b"\r\n\r\n", eol) >= 0 else None
        start, pos = eol + 2, eol + 2 + size + 2
        if len(data) < pos:
            return None
        chunks.append(data[start : start + size])
    return None


def _charset(headers: dict[str, str]) -> str | None:
    for param in headers.get("content-type", "").split(";")[1:]:
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset":
            return value.strip().strip('"') or None
    return None

