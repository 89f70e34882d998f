"""Outbound HTTP clients: httpx's API, aiohttp on the wire.

Services and the sandbox call partners and the WhatsApp Cloud API through ``httpx.AsyncClient``
(its request/response objects, timeouts and exception classes are what the callers and their unit
tests use, with ``httpx.MockTransport``). httpx's default transport (httpcore over anyio) is the
most expensive thing a request does: 2.2-3.1 ms of client CPU per POST at 16 in flight, against
0.84-0.94 ms for the same ``httpx.AsyncClient`` over aiohttp (``python -m bench.micro --only http``).
So :func:`outbound_client` builds the client on :class:`AiohttpTransport` below.

Why our own adapter and not the ``httpx-aiohttp`` package: callers decide from the exception
whether a request may have reached the server (``shared/whatsapp/client.py``: a WhatsApp message
must not go out twice). httpx-aiohttp maps every ``aiohttp.ClientConnectionError`` - a server that
disconnected after reading the request included - to ``httpx.ConnectTimeout`` ("not sent"). Here:

* the connection could not be made (``ClientConnectorError``) -> ``httpx.ConnectError``;
* no connection in time (``ConnectionTimeoutError``: pool wait or connect) -> ``httpx.ConnectTimeout``;
* the transport closed before the request was written (``ClientConnectionResetError``)
  -> ``httpx.WriteError``;
* everything after the request may have left - no answer in time (``SocketTimeoutError``) ->
  ``httpx.ReadTimeout``; server disconnected, connection reset, broken body ->
  ``httpx.RemoteProtocolError`` / ``httpx.ReadError``: "maybe sent".

The answer is read whole inside the transport (partners and the Cloud API answer a few hundred
bytes), so a broken body is mapped here too. Redirects are not followed, nothing is compressed.

:class:`OutboundClient` is ``httpx.AsyncClient`` without the layers our calls never use: no auth,
no redirects, no cookies, no event hooks, never streamed. ``send`` hands the request straight to
the transport (httpx's own ``send`` walks auth, redirect, cookie and hook handling for each
request: about 0.2 ms of the 0.4 ms httpx adds to a POST over aiohttp, measured 540-620 against
735-770 us of client CPU per POST at 16 in flight). A call that asks for any of those layers goes
through httpx's ``send`` unchanged. ``response.elapsed`` is not set on the lean path.

:meth:`OutboundClient.post_json` is the hot calls' path (every WhatsApp message): the body encoded
by orjson and handed straight to the aiohttp session, without building an ``httpx.Request`` at all;
the answer is still an ``httpx.Response`` and failures raise the same mapped exceptions. Client CPU
per POST at 16 in flight, against a local uvicorn, three rounds: 380-455 us, against 500-710 us
through ``client.post(json=...)`` (plain aiohttp: 280-350 us). On any other transport (tests'
``httpx.MockTransport``) or with client-level auth/cookies/hooks/redirects/params/base_url it is
``client.post``.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import aiohttp
import httpx
import orjson
from httpx._client import USE_CLIENT_DEFAULT  # httpx's own sentinel for "the client's default"

# keep-alive shorter than the servers keep idle connections (uvicorn: 5 s default, ours 30 s), so
# a connection is never reused just as the server closes it (a ReadError on an accepted request)
KEEPALIVE_S = 2.0


def mapped_error(exc: aiohttp.ClientError) -> httpx.TransportError:
    """The httpx exception that tells the caller whether the request can have been received."""
    message = str(exc) or type(exc).__name__
    if isinstance(exc, aiohttp.ClientConnectorError):
        return httpx.ConnectError(message)
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return httpx.ConnectTimeout(message)
    if isinstance(exc, aiohttp.SocketTimeoutError | aiohttp.ServerTimeoutError):
        return httpx.ReadTimeout(message)
    if isinstance(exc, aiohttp.ClientConnectionResetError):
        return httpx.WriteError(message)
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return httpx.RemoteProtocolError(message)
    if isinstance(exc, aiohttp.InvalidURL | aiohttp.NonHttpUrlClientError):
        return httpx.UnsupportedProtocol(message)
    return httpx.ReadError(message)  # connection reset, broken body...: maybe received


class AiohttpTransport(httpx.AsyncBaseTransport):
    """An httpx transport that sends with one ``aiohttp.ClientSession`` (created on first use)."""

    def __init__(self, max_connections: int = 100, keepalive_s: float = KEEPALIVE_S) -> None:
        self._max_connections = max_connections
        self._keepalive_s = keepalive_s
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            limit=self._max_connections, keepalive_timeout=self._keepalive_s
        )
        # no cookies kept between calls, no environment proxies: every call stands alone
        return aiohttp.ClientSession(
            connector=connector, cookie_jar=aiohttp.DummyCookieJar(), trust_env=False,
            auto_decompress=False,  # httpx decodes Content-Encoding itself
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        t = request.extensions.get("timeout", {})
        body = await request.aread()
        return await self.exchange(
            request, request.method, str(request.url), list(request.headers.multi_items()),
            body or None, _timeout(t.get("connect"), t.get("pool"), t.get("read")),
        )

    async def exchange(
        self,
        request: httpx.Request,
        method: str,
        url: str,
        headers: list[tuple[str, str]],
        body: bytes | None,
        timeout: aiohttp.ClientTimeout,
    ) -> httpx.Response:
        """One request on the aiohttp session; the answer read whole, as an ``httpx.Response``."""
        if self._session is None or self._session.closed:
            self._session = self._open()
        try:
            async with self._session.request(
                method, url, headers=headers, data=body, allow_redirects=False, timeout=timeout
            ) as answer:
                content = await answer.read()
                return httpx.Response(
                    answer.status,
                    headers=list(answer.raw_headers),
                    content=content,
                    request=request,
                    extensions={"http_version": b"HTTP/1.1",
                                "reason_phrase": (answer.reason or "").encode()},
                )
        except aiohttp.ClientError as exc:
            raise mapped_error(exc) from exc

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


@functools.lru_cache(maxsize=64)
def _timeout(connect: float | None, pool: float | None, read: float | None) -> aiohttp.ClientTimeout:
    """httpx's timeouts as aiohttp's (the same few values every call: built once each)."""
    return aiohttp.ClientTimeout(
        total=None,
        # aiohttp's "connect" is the wait for a pooled connection plus connecting
        connect=None if connect is None or pool is None else connect + pool,
        sock_connect=connect,
        sock_read=read,
    )


_JSON = ("Content-Type", "application/json")


class OutboundClient(httpx.AsyncClient):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._post_json_requests: dict[str, httpx.Request] = {}

    def _lean(self) -> bool:
        """No layer our calls never use is set on the client: auth, redirects, cookies, hooks
        (and it is open: httpx's send refuses a closed client, "the client has been closed")."""
        return not (
            self.is_closed
            or self._auth is not None
            or self.follow_redirects
            or self._event_hooks["request"]
            or self._event_hooks["response"]
            or self.cookies
        )

    async def post_json(
        self,
        url: str | httpx.URL,
        body: Any,
        *,
        headers: Mapping[str, str] | None = None,
        timeout: httpx.Timeout | None = None,
    ) -> httpx.Response:
        """``post(url, json=body, headers=..., timeout=...)``, cheaper (see the module's doc).

        ``url`` must be absolute. The request carries the client's headers, overridden by
        ``headers``, and ``Content-Type: application/json``. ``response.request`` has the method
        and URL, not the headers or body.
        """
        transport = self._transport
        if (
            not isinstance(transport, AiohttpTransport)
            or self._mounts
            or str(self.base_url)
            or self.params
            or not self._lean()
        ):
            return await _post_json_plainly(self, url, body, headers, timeout)
        t = timeout or self.timeout
        target = str(url)
        # ``response.request``: method and URL only (no headers or body), one object per URL -
        # building an httpx.Request parses the URL, ~50 us, a sixth of the whole call
        requests = self._post_json_requests
        request = requests.get(target)
        if request is None:
            if len(requests) >= 256:
                requests.clear()
            request = requests[target] = httpx.Request("POST", target)
        merged = self.headers.copy()  # case-insensitive: the call's headers replace the client's
        merged.update(headers or {})
        merged[_JSON[0]] = _JSON[1]
        return await transport.exchange(
            request,
            "POST",
            target,
            list(merged.multi_items()),
            orjson.dumps(body),
            _timeout(t.connect, t.pool, t.read),
        )

    async def send(
        self,
        request: httpx.Request,
        *,
        stream: bool = False,
        auth: Any = USE_CLIENT_DEFAULT,
        follow_redirects: Any = USE_CLIENT_DEFAULT,
    ) -> httpx.Response:
        if (
            stream
            or auth is not USE_CLIENT_DEFAULT
            or follow_redirects is not USE_CLIENT_DEFAULT
            or not self._lean()
        ):
            return await super().send(
                request, stream=stream, auth=auth, follow_redirects=follow_redirects
            )
        response = await self._transport_for_url(request.url).handle_async_request(request)
        response.request = request
        response.default_encoding = self._default_encoding
        if not response.is_stream_consumed:  # a transport that streams (tests' MockTransport)
            await response.aread()
        return response


def outbound_client(
    *,
    max_connections: int = 100,
    timeout: float | httpx.Timeout = 10.0,
    base_url: str = "",
    transport: httpx.AsyncBaseTransport | None = None,
) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` on aiohttp (or on ``transport``: tests pass a MockTransport)."""
    return OutboundClient(
        base_url=base_url,
        timeout=timeout,
        transport=transport or AiohttpTransport(max_connections=max_connections),
    )


async def post_json(
    client: httpx.AsyncClient,
    url: str | httpx.URL,
    body: Any,
    *,
    headers: Mapping[str, str] | None = None,
    timeout: httpx.Timeout | None = None,
) -> httpx.Response:
    """POST ``body`` as JSON: :meth:`OutboundClient.post_json` on our clients, ``client.post``
    on any other ``httpx.AsyncClient`` (a test's, say)."""
    if isinstance(client, OutboundClient):
        return await client.post_json(url, body, headers=headers, timeout=timeout)
    return await _post_json_plainly(client, url, body, headers, timeout)


async def _post_json_plainly(
    client: httpx.AsyncClient,
    url: str | httpx.URL,
    body: Any,
    headers: Mapping[str, str] | None,
    timeout: httpx.Timeout | None,
) -> httpx.Response:
    merged = httpx.Headers(headers)
    merged[_JSON[0]] = _JSON[1]
    return await client.post(
        url, content=orjson.dumps(body), headers=merged, timeout=timeout or USE_CLIENT_DEFAULT
    )

