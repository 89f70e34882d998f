"""Outbound HTTP clients: httpx's API, our own keep-alive connections on the wire.

Services and the sandbox call partners and the WhatsApp Cloud API through ``httpx.AsyncClient``
(its request/response objects, timeouts and exception classes are what the callers and their unit
tests use, with ``httpx.MockTransport``). httpx's default transport (httpcore over anyio) is the
most expensive thing a request does: 2.2-3.1 ms of client CPU per POST at 16 in flight
(``python -m bench.micro --only http``). So :func:`outbound_client` builds the client on
:class:`WireTransport` below: ``shared.http_wire``'s connection pool, answers parsed by httptools.
Until 2026-11-23 the transport was aiohttp's client, itself about twice the CPU of a bare
keep-alive client (see ``shared/http_wire.py``).

Exceptions tell the caller whether a request may have reached the server
(``shared/whatsapp/client.py``: a WhatsApp message must not go out twice): ``httpx.ConnectError``
and ``httpx.ConnectTimeout`` are "not sent"; ``httpx.ReadTimeout``, ``httpx.RemoteProtocolError``
and ``httpx.ReadError`` are "maybe sent" (the list is in ``shared/http_wire.py``). The answer is
read whole (partners and the Cloud API answer a few hundred bytes). Redirects are not followed,
nothing is compressed.

:class:`OutboundClient` is ``httpx.AsyncClient`` without the layers our calls never use: no auth,
no redirects, no cookies, no event hooks, never streamed. ``send`` hands the request straight to
the transport (httpx's own ``send`` walks auth, redirect, cookie and hook handling for each
request: about 0.2 ms of client CPU per POST). A call that asks for any of those layers goes
through httpx's ``send`` unchanged. ``response.elapsed`` is not set on the lean path.

:meth:`OutboundClient.post_json` is the hot calls' path (every WhatsApp message): the body encoded
by orjson and handed straight to the connection pool, without building an ``httpx.Request`` at
all; the answer is still an ``httpx.Response`` and failures raise the same exceptions. On any
other transport (tests' ``httpx.MockTransport``) or with client-level
auth/cookies/hooks/redirects/params/base_url it is ``client.post``.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import httpx
import orjson
from httpx._client import USE_CLIENT_DEFAULT  # httpx's own sentinel for "the client's default"

from shared.http_wire import KEEPALIVE_S, Timeouts, WirePool

__all__ = ["KEEPALIVE_S", "OutboundClient", "WireTransport", "outbound_client", "post_json"]


class WireTransport(httpx.AsyncBaseTransport):
    """An httpx transport that sends on one ``shared.http_wire.WirePool``."""

    def __init__(self, max_connections: int = 100, keepalive_s: float = KEEPALIVE_S) -> None:
        self.pool = WirePool(max_connections=max_connections, keepalive_s=keepalive_s)

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
        timeout: Timeouts,
    ) -> httpx.Response:
        """One request on the pool; the answer read whole, as an ``httpx.Response``."""
        answer = await self.pool.exchange(method, url, headers, body, timeout)
        return httpx.Response(
            answer.status,
            headers=answer.headers,
            content=answer.content,
            request=request,
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": answer.reason},
        )

    async def aclose(self) -> None:
        await self.pool.close()


@functools.lru_cache(maxsize=64)
def _timeout(connect: float | None, pool: float | None, read: float | None) -> Timeouts:
    """httpx's timeouts as the pool's (the same few values every call: built once each)."""
    return Timeouts(connect=connect, pool=pool, read=read)


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
            not isinstance(transport, WireTransport)
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
    """An ``httpx.AsyncClient`` on our connection pool (or on ``transport``: tests pass a
    MockTransport)."""
    return OutboundClient(
        base_url=base_url,
        timeout=timeout,
        transport=transport or WireTransport(max_connections=max_connections),
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

