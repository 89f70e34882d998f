"""A small HTTP/1.1 keep-alive client for the load generator and the operator robot.

The benchmark shares two cores with the system it measures, so the client must be cheap: httpx
costs 1.5-5 ms of CPU per request under concurrency (see shared/notes/performance.md), which at
a few hundred calls a second would take a good part of a core away from the services. This client
speaks just what the local uvicorn servers answer (Content-Length or chunked bodies, keep-alive)
at about a tenth of that. It mimics the part of ``httpx.AsyncClient``/``httpx.Response`` that
``deploy.local.demo.print_job`` uses, so the robot reuses that function as it is.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any, Self
from urllib.parse import urlencode, urlsplit

import orjson


class HttpStatusError(RuntimeError):
    def __init__(self, response: Response) -> None:
        super().__init__(f"HTTP {response.status_code}: {response.text[:300]}")
        self.response = response


@dataclass
class Response:
    status_code: int
    content: bytes
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        return orjson.loads(self.content)

    def raise_for_status(self) -> None:
        if self.status_code >= 400:
            raise HttpStatusError(self)


class _Pool:
    def __init__(self, host: str, port: int, size: int) -> None:
        self.host, self.port = host, port
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.slots = asyncio.Semaphore(size)

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection(self.host, self.port, limit=1 << 20)

    def close(self) -> None:
        for _, writer in self.idle:
            writer.close()
        self.idle.clear()


class RawHttp:
    """``await http.post(url, json=...)`` / ``await http.get(url, params=...)``, pooled per host."""

    def __init__(self, max_connections_per_host: int = 64, timeout_s: float = 30.0) -> None:
        self._size = max_connections_per_host
        self._timeout = timeout_s
        self._pools: dict[tuple[str, int], _Pool] = {}

    def _pool(self, host: str, port: int) -> _Pool:
        pool = self._pools.get((host, port))
        if pool is None:
            pool = self._pools[(host, port)] = _Pool(host, port, self._size)
        return pool

    async def post(self, url: str, json: Any = None, headers: dict[str, str] | None = None,
                   retry: bool = True) -> Response:
        body = orjson.dumps(json) if json is not None else b""
        return await self.request("POST", url, body, headers, retry)

    async def get(self, url: str, params: dict[str, Any] | None = None,
                  headers: dict[str, str] | None = None) -> Response:
        if params:
            url = f"{url}?{urlencode({k: v for k, v in params.items() if v is not None})}"
        return await self.request("GET", url, b"", headers)

    async def request(self, method: str, url: str, body: bytes = b"",
                      headers: dict[str, str] | None = None, retry: bool = True) -> Response:
        parts = urlsplit(url)
        host, port = parts.hostname or "127.0.0.1", parts.port or 80
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        head = [f"{method} {target} HTTP/1.1", f"host: {host}:{port}"]
        if method != "GET" or body:
            head += ["content-type: application/json", f"content-length: {len(body)}"]
        head += [f"{k}: {v}" for k, v in (headers or {}).items()]
        raw = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body
        pool = self._pool(host, port)
        async with pool.slots:
            # A kept-alive connection may have been closed by the server meanwhile: one retry on a
            # fresh connection, as browsers and httpx do. ``retry=False`` for a call that is not
            # safe to repeat (the robot's claim-next: a second call takes a second stack).
            for attempt in (0, 1) if retry else (1,):
                reused = bool(pool.idle) and attempt == 0
                reader, writer = pool.idle.pop() if reused else await pool.connect()
                try:
                    writer.write(raw)
                    response, keep = await asyncio.wait_for(_read(reader), self._timeout)
                except (ConnectionError, asyncio.IncompleteReadError, OSError):
                    writer.close()
                    if reused:
                        continue
                    raise
                except BaseException:
                    writer.close()
                    raise
                if keep:
                    pool.idle.append((reader, writer))
                else:
                    writer.close()
                return response
        raise ConnectionError(f"{method} {url}: connection closed")  # pragma: no cover

    async def aclose(self) -> None:
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *_: object) -> None:
        with contextlib.suppress(Exception):
            await self.aclose()


async def _read(reader: asyncio.StreamReader) -> tuple[Response, bool]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        chunks = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                break
            chunks.append(await reader.readexactly(size))
            await reader.readexactly(2)
        content = b"".join(chunks)
    else:
        content = await reader.readexactly(int(headers.get("content-length", "0")))
    keep = headers.get("connection", "").lower() != "close"
    return Response(status, content, headers), keep
