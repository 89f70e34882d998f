"""HTTP/1.1 on the wire for our outbound calls: a keep-alive connection pool on asyncio, with
answers parsed by httptools (llhttp, uvicorn's C parser).

Every WhatsApp message, booking and sandbox callback is one POST of a few hundred bytes answered
by a few hundred bytes. For that, aiohttp's client (what ``shared/http_client.py`` sent with until
2026-11-23) costs about twice the CPU of the request itself: URL objects, multidicts, tracing
hooks, timers and a cookie jar per call (client CPU per POST at 16 in flight, against a local
uvicorn: aiohttp 260-285 us, a bare keep-alive client 117-128 us; ``python -m bench.micro --only
http``). This module is the bare client with what production needs around it: the parsing is
httptools', the code here only pools connections, writes the request and maps failures.

What it does: ``http`` and ``https`` (the ``ssl`` module, certifi's CA bundle as httpx uses);
keep-alive connections reused for ``keepalive_s`` (shorter than the servers keep them: a
connection is not reused just as the server closes it); at most ``max_connections`` open at once,
callers beyond that waiting in line up to the pool timeout; answers framed by Content-Length,
chunked, or by the server closing the connection; interim 1xx answers skipped; answers larger
than ``max_answer_bytes`` refused. What it does not: proxies, redirects, decompression (httpx
decodes Content-Encoding on the ``httpx.Response``), streamed bodies (the request's is sent whole,
with our own Content-Length), HEAD (refused: its answer's framing is not what llhttp expects),
``Expect: 100-continue``, HTTP/2.

**Errors are httpx's exceptions, chosen by whether the request can have reached the server**
(``shared/whatsapp/client.py`` relies on it never to send a message twice):

* the connection could not be made (refused, unknown host, TLS handshake) -> ``httpx.ConnectError``:
  not sent;
* no connection in time (waiting for a free one, or connecting) -> ``httpx.ConnectTimeout``: not
  sent;
* a pooled connection found closed before the request is written is dropped and another one used:
  nothing was sent on it;
* the request was written and no complete answer came in time (``read``: the longest wait for the
  next bytes) -> ``httpx.ReadTimeout``: maybe sent;
* the server closed the connection before a complete answer, or answered something that is not
  HTTP -> ``httpx.RemoteProtocolError``: maybe sent;
* the connection broke (reset) after the request was written, or the answer was too large ->
  ``httpx.ReadError``: maybe sent.

A cancelled call closes its connection (its answer may still be on the way).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ssl
from collections import deque
from dataclasses import dataclass
from urllib.parse import urlsplit

import certifi
import httptools
import httpx

# keep-alive shorter than the servers keep idle connections (uvicorn: 5 s default, ours 30 s), so
# a connection is never reused just as the server closes it (a ReadError on an accepted request)
KEEPALIVE_S = 2.0
MAX_ANSWER_BYTES = 16 * 2**20


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Seconds (None: no limit): ``connect`` a new connection (TCP and TLS), ``pool`` wait for a
    free one when ``max_connections`` are open, ``read`` the longest wait for the answer's next
    bytes once the request is written."""

    connect: float | None = None
    pool: float | None = None
    read: float | None = None


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    reason: bytes
    headers: list[tuple[bytes, bytes]]  # as received: order and repeats kept
    content: bytes


@dataclass(frozen=True, slots=True)
class _Target:
    key: tuple[str, str, int]  # scheme, host, port: the connections it may use
    host_header: str
    path: str  # path and query, as written on the request line


@functools.lru_cache(maxsize=512)
def _target(url: str) -> _Target:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        raise httpx.UnsupportedProtocol(f"cannot send to {url!r}: only http:// and https:// URLs")
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError as exc:  # a port that is not a number
        raise httpx.UnsupportedProtocol(f"cannot send to {url!r}: {exc}") from None
    host_header = parts.netloc.rpartition("@")[2]  # without user info; IPv6 keeps its brackets
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    if any(c <= " " or c == "\x7f" for c in path):
        raise httpx.LocalProtocolError(f"the URL's path {path!r} is not percent-encoded")
    return _Target((scheme, parts.hostname, port), host_header, path)


_FORBIDDEN = frozenset("\r\n\0")
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})  # not HEAD: see above
_FRAMING = frozenset({"content-length", "transfer-encoding"})


def _request_bytes(
    method: str, target: _Target, headers: list[tuple[str, str]], body: bytes | None
) -> bytes:
    """The request line, the headers (Host added unless given) and the body, framed by our own
    Content-Length (the body is always sent whole: a caller's Content-Length or Transfer-Encoding
    is replaced)."""
    if method not in _METHODS:
        raise httpx.LocalProtocolError(f"method {method!r} is not supported here")
    lines = [f"{method} {target.path} HTTP/1.1"]
    host = False
    for name, value in headers:
        if not _FORBIDDEN.isdisjoint(name) or not _FORBIDDEN.isdisjoint(value):
            raise httpx.LocalProtocolError(f"header {name!r}: line breaks are not allowed")
        lowered = name.lower()
        if lowered in _FRAMING:
            continue
        host = host or lowered == "host"
        lines.append(f"{name}: {value}")
    if not host:
        lines.append(f"Host: {target.host_header}")
    if body or method in _BODY_METHODS:
        lines.append(f"Content-Length: {len(body or b'')}")
    lines.append("\r\n")
    try:
        head = "\r\n".join(lines).encode("latin-1")
    except UnicodeEncodeError as exc:
        raise httpx.LocalProtocolError(f"a header is not latin-1: {exc}") from None
    return head + body if body else head


class _Connection(asyncio.Protocol):
    """One keep-alive connection: one request at a time, its answer fed to httptools."""

    def __init__(self, pool: WirePool, key: tuple[str, str, int]) -> None:
        self.pool = pool
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.counted = True  # holds one of the pool's max_connections
        self.reused = False  # has been back in the pool (a fresh one is never retried)
        self.idle_since = 0.0
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[tuple[Answer, bool]] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._last_bytes = 0.0
        self._read_s: float | None = None
        self._received = 0
        self._reason = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []
        self._framed = False  # Content-Length or chunked: else the server's close ends the body
        self._head_done = False

    # --- one exchange ----------------------------------------------------------------------------

    async def exchange(self, data: bytes, read_s: float | None) -> tuple[Answer, bool]:
        """Write the request; the answer and whether the connection may be used again."""
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        self._reason, self._headers, self._body = b"", [], []
        self._framed = self._head_done = False
        self._received = 0
        waiter = self._waiter = loop.create_future()
        self.transport.write(data)
        self._read_s = read_s
        if read_s is not None:
            self._last_bytes = loop.time()
            self._timer = loop.call_at(self._last_bytes + read_s, self._check_read)
        try:
            return await waiter
        finally:
            self._waiter = None
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

    def _check_read(self) -> None:
        """The read timeout: fail unless bytes came meanwhile (then wait again from them)."""
        self._timer = None
        if self._waiter is None or self._waiter.done() or self._read_s is None:
            return
        loop = asyncio.get_running_loop()
        due = self._last_bytes + self._read_s
        if loop.time() < due:
            self._timer = loop.call_at(due, self._check_read)
            return
        self._fail(httpx.ReadTimeout(f"no answer within {self._read_s} s"))

    def _fail(self, error: Exception) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(error)
        self.close()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    # --- asyncio.Protocol --------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        waiter = self._waiter
        if waiter is None or waiter.done():
            self.close()  # bytes nobody asked for: the connection cannot be trusted any more
            return
        self._received += len(data)
        if self._received > self.pool.max_answer_bytes:
            self._fail(httpx.ReadError(f"answer larger than {self.pool.max_answer_bytes} bytes"))
            return
        if self._read_s is not None:
            self._last_bytes = asyncio.get_running_loop().time()
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(httpx.RemoteProtocolError("the server switched protocols"))
        except httptools.HttpParserError as exc:
            self._fail(httpx.RemoteProtocolError(f"the answer is not valid HTTP/1.1: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            if self._head_done and not self._framed and exc is None:
                self._finish(keep=False)  # a body that ends with the connection: complete
            elif exc is None:
                waiter.set_exception(httpx.RemoteProtocolError(
                    "the server closed the connection without a complete answer"))
            else:
                waiter.set_exception(httpx.ReadError(f"{type(exc).__name__}: {exc}"))
        self.pool._lost(self)

    # --- httptools' callbacks ----------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self._waiter is None or self._waiter.done():
            # bytes after the complete answer, in the same packet (more body than its length,
            # two answers): stop here; the connection is closed before anyone reuses it
            raise RuntimeError("bytes after the complete answer")

    def on_status(self, status: bytes) -> None:
        self._reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._head_done = True
        for name, value in self._headers:
            lowered = name.lower()
            if lowered == b"content-length" or (
                lowered == b"transfer-encoding" and b"chunked" in value.lower()
            ):
                self._framed = True
                break

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        status = self._parser.get_status_code()
        if 100 <= status < 200:  # an interim answer (102, 103): the real one follows
            self._reason, self._headers, self._body = b"", [], []
            self._framed = self._head_done = False
            return
        self._finish(keep=self._parser.should_keep_alive())

    def _finish(self, *, keep: bool) -> None:
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        answer = Answer(self._parser.get_status_code(), self._reason, self._headers,
                        b"".join(self._body))
        waiter.set_result((answer, keep and not self.closed))


class WirePool:
    """Keep-alive HTTP/1.1 connections to any number of servers, at most ``max_connections``
    open at once. One per process and purpose; ``close()`` when done. ``ssl_context``: for https,
    instead of the default (certificates verified against certifi's CA bundle)."""

    def __init__(
        self,
        max_connections: int = 100,
        keepalive_s: float = KEEPALIVE_S,
        max_answer_bytes: int = MAX_ANSWER_BYTES,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.max_connections = max_connections
        self.keepalive_s = keepalive_s
        self.max_answer_bytes = max_answer_bytes
        self._idle: dict[tuple[str, str, int], deque[_Connection]] = {}
        self._open = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._ssl = ssl_context  # None: the default one, made on the first https call
        self.closed = False

    async def exchange(
        self,
        method: str,
        url: str,
        headers: list[tuple[str, str]],
        body: bytes | None,
        timeouts: Timeouts,
    ) -> Answer:
        """Send one request and read its answer whole (errors: see the module's doc)."""
        target = _target(url)
        data = _request_bytes(method, target, headers, body)
        while True:
            conn = await self._acquire(target.key, timeouts)
            if not (conn.closed or conn.transport is None or conn.transport.is_closing()):
                break
            self._discard(conn)  # closed before anything was written on it
            if not conn.reused:
                raise httpx.ConnectError("the server closed the new connection at once")
            # a pooled one the server closed while it was idle: take another
        try:
            answer, keep = await conn.exchange(data, timeouts.read)
        except BaseException:
            self._discard(conn)  # failed, timed out or cancelled: its state is unknown
            raise
        if keep:
            self._release(conn)
        else:
            self._discard(conn)
        return answer

    async def close(self) -> None:
        """Close the idle connections now, the busy ones when their exchange ends."""
        self.closed = True
        for idle in self._idle.values():
            while idle:
                self._discard(idle.popleft())
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)

    # --- the pool ------------------------------------------------------------------------------------

    async def _acquire(self, key: tuple[str, str, int], timeouts: Timeouts) -> _Connection:
        loop = asyncio.get_running_loop()
        deadline = None if timeouts.pool is None else loop.time() + timeouts.pool
        while True:
            if self.closed:
                raise httpx.ConnectError("the client has been closed")
            idle = self._idle.get(key)
            now = loop.time()
            while idle:
                conn = idle.pop()  # the most recently used: the least likely to be closing
                if (conn.closed or conn.transport is None or conn.transport.is_closing()
                        or now - conn.idle_since > self.keepalive_s):
                    # closing: the server's close has arrived and connection_lost has not run
                    # yet (a write now would be dropped, and the call reported "maybe sent")
                    self._discard(conn)
                    continue
                return conn
            if self._open >= self.max_connections:
                self._close_an_idle_one()  # idle connections to other servers give way
            if self._open < self.max_connections:
                self._open += 1
                try:
                    return await self._connect(key, timeouts.connect)
                except BaseException:
                    self._open -= 1
                    self._wake()
                    raise
            waiter = loop.create_future()
            self._waiters.append(waiter)
            try:
                async with asyncio.timeout_at(deadline):
                    await waiter
            except BaseException as exc:
                if waiter.done() and not waiter.cancelled():
                    self._wake()  # woken, but leaving (cancelled, timed out): the next in line
                if not isinstance(exc, TimeoutError):
                    raise
                raise httpx.ConnectTimeout(
                    f"no free connection within {timeouts.pool} s "
                    f"({self.max_connections} in use)") from None
            finally:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)

    async def _connect(self, key: tuple[str, str, int], timeout: float | None) -> _Connection:
        scheme, host, port = key
        loop = asyncio.get_running_loop()
        conn = _Connection(self, key)
        tls = None
        if scheme == "https":
            if self._ssl is None:
                self._ssl = ssl.create_default_context(cafile=certifi.where())
            tls = self._ssl
        try:
            async with asyncio.timeout(timeout):
                await loop.create_connection(
                    lambda: conn, host, port, ssl=tls, server_hostname=host if tls else None
                )
        except TimeoutError:
            raise httpx.ConnectTimeout(
                f"connecting to {host}:{port} took longer than {timeout} s") from None
        except OSError as exc:  # refused, unreachable, unknown host, TLS handshake (SSLError)
            raise httpx.ConnectError(f"cannot connect to {host}:{port}: {exc}") from exc
        return conn

    def _release(self, conn: _Connection) -> None:
        if self.closed or conn.closed:
            self._discard(conn)
            return
        loop = asyncio.get_running_loop()
        conn.reused = True
        conn.idle_since = now = loop.time()
        idle = self._idle.setdefault(conn.key, deque())
        while idle and now - idle[0].idle_since > self.keepalive_s:
            self._discard(idle.popleft())  # the oldest ones, past their keep-alive
        idle.append(conn)
        self._wake()

    def _discard(self, conn: _Connection) -> None:
        conn.close()
        if conn.counted:
            conn.counted = False
            self._open -= 1
            self._wake()

    def _lost(self, conn: _Connection) -> None:
        """The server closed ``conn``: if it was idle, its room goes to the next caller now."""
        idle = self._idle.get(conn.key)
        if idle is not None and conn in idle:
            idle.remove(conn)
            self._discard(conn)

    def _close_an_idle_one(self) -> None:
        oldest = None
        for idle in self._idle.values():
            if idle and (oldest is None or idle[0].idle_since < oldest[0].idle_since):
                oldest = idle
        if oldest is not None:
            self._discard(oldest.popleft())

    def _wake(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
