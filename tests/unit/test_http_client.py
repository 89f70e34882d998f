"""shared/http_client.py: httpx's API over our connection pool, and exceptions that tell 'not sent' from
'maybe sent' (the WhatsApp sender relies on it to never send a message twice)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest

from shared.http_client import outbound_client, post_json
from shared.whatsapp.client import WhatsAppClient, WhatsAppError

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def serving(handler: Handler) -> AsyncIterator[str]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()


async def _read_request(reader: asyncio.StreamReader) -> tuple[list[str], bytes] | None:
    """The head's lines and the body of the next request on the connection (None: closed)."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    lines = [line for line in head.decode().split("\r\n") if line]
    length = next((int(line.split(":")[1]) for line in lines
                   if line.lower().startswith("content-length")), 0)
    return lines, await reader.readexactly(length)


async def _answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A keep-alive HTTP/1.1 server that echoes JSON bodies."""
    while (request := await _read_request(reader)) is not None:
        body = request[1]
        payload = b'{"echo": ' + body + b"}"
        writer.write(b"HTTP/1.1 201 Created\r\ncontent-type: application/json\r\nx-seen: a\r\n"
                     b"x-seen: b\r\ncontent-length: " + str(len(payload)).encode() + b"\r\n\r\n"
                     + payload)
        await writer.drain()


async def _hang_up_after_request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    writer.close()


async def _never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.sleep(30)


async def test_request_and_answer_round_trip() -> None:
    async with serving(_answer) as url:
        client = outbound_client(timeout=5.0)
        try:
            for n in range(3):  # the connection is reused
                response = await client.post(f"{url}/x", json={"n": n})
                assert response.status_code == 201
                assert response.json() == {"echo": {"n": n}}
                assert response.headers.get_list("x-seen") == ["a", "b"]
                assert response.reason_phrase == "Created"
        finally:
            await client.aclose()


async def test_refused_connection_is_a_connect_error_not_sent() -> None:
    async with serving(_answer) as url:
        pass  # closed: nothing listens on the port any more
    client = outbound_client(timeout=2.0)
    try:
        with pytest.raises(httpx.ConnectError):
            await client.post(f"{url}/x", json={})
    finally:
        await client.aclose()


async def test_server_gone_after_the_request_is_maybe_sent() -> None:
    async with serving(_hang_up_after_request) as url:
        client = outbound_client(timeout=2.0)
        try:
            with pytest.raises(httpx.RemoteProtocolError):
                await client.post(f"{url}/x", json={})
        finally:
            await client.aclose()


async def test_no_answer_in_time_is_a_read_timeout() -> None:
    async with serving(_never_answer) as url:
        client = outbound_client(timeout=0.3)
        try:
            with pytest.raises(httpx.ReadTimeout):
                await client.post(f"{url}/x", json={})
        finally:
            await client.aclose()


@pytest.mark.parametrize(
    ("handler", "ambiguous"),
    [(_hang_up_after_request, True), (_never_answer, True)],
)
async def test_whatsapp_client_treats_a_lost_answer_as_ambiguous(
    handler: Handler, ambiguous: bool
) -> None:
    async with serving(handler) as url:
        http = outbound_client(timeout=0.3)
        try:
            client = WhatsAppClient(http, url, "123", "token", timeout_s=0.3)
            with pytest.raises(WhatsAppError) as caught:
                await client.send_text("+6281234567890", "halo")
            assert caught.value.ambiguous is ambiguous
            assert caught.value.transient
        finally:
            await http.aclose()


async def test_whatsapp_client_refused_is_not_sent() -> None:
    async with serving(_answer) as url:
        pass
    http = outbound_client(timeout=1.0)
    try:
        client = WhatsAppClient(http, url, "123", "token", timeout_s=1.0)
        with pytest.raises(WhatsAppError) as caught:
            await client.send_text("+6281234567890", "halo")
        assert caught.value.ambiguous is False
        assert "not sent" in caught.value.reason
    finally:
        await http.aclose()


async def test_the_lean_send_answers_as_httpx_does_and_leaves_other_calls_to_httpx() -> None:
    """OutboundClient skips httpx's auth/redirect/cookie/hook layers (never used by our calls);
    a call that asks for one of them still gets httpx's own handling."""
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(f"{request.method} {request.url.path} {request.headers.get('x-k')}")
        if request.url.path == "/old":
            return httpx.Response(307, headers={"location": "/new"})
        return httpx.Response(201, json={"path": request.url.path}, headers={"x-seen": "a"})

    client = outbound_client(base_url="http://partner.test", transport=httpx.MockTransport(handler))
    try:
        answer = await client.post("/msg", json={"a": 1}, headers={"x-k": "v"})
        assert (answer.status_code, answer.json(), answer.headers["x-seen"]) == (
            201, {"path": "/msg"}, "a")
        assert answer.request.url == "http://partner.test/msg"
        assert answer.text == '{"path":"/msg"}'
        # not followed on the lean path (as with httpx's default follow_redirects=False)...
        assert (await client.get("/old")).status_code == 307
        # ...and followed when asked: that call goes through httpx's own send
        followed = await client.get("/old", follow_redirects=True)
        assert (followed.status_code, followed.json()) == (201, {"path": "/new"})
        assert seen == ["POST /msg v", "GET /old None", "GET /old None", "GET /new None"]
    finally:
        await client.aclose()
    with pytest.raises(RuntimeError, match="closed"):  # nothing leaves a closed client
        await client.post("/late", json={})
    assert len(seen) == 4


async def _echo_head(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answers with the request's head lines and body, as JSON."""
    request = await _read_request(reader)
    assert request is not None
    lines, body = request
    payload = json.dumps({"head": lines, "body": body.decode()}).encode()
    writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
                 + str(len(payload)).encode() + b"\r\n\r\n" + payload)
    await writer.drain()
    writer.close()


async def test_post_json_sends_what_post_json_equals_would_send() -> None:
    """The hot path (no httpx.Request built) sends the client's and the call's headers and the
    JSON body, and answers an httpx.Response like ``post``."""
    async with serving(_echo_head) as url:
        client = outbound_client(timeout=5.0)
        client.headers["x-client"] = "c"
        try:
            response = await post_json(client, f"{url}/m?x=1", {"a": "é", "n": [1]},
                                       headers={"Authorization": "Bearer t"})
        finally:
            await client.aclose()
    assert response.status_code == 200 and response.reason_phrase == "OK"
    answer = response.json()
    assert answer["head"][0] == "POST /m?x=1 HTTP/1.1"
    head = {line.split(": ", 1)[0].lower(): line.split(": ", 1)[1] for line in answer["head"][1:]}
    assert head["authorization"] == "Bearer t"
    assert head["x-client"] == "c"
    assert head["content-type"] == "application/json"
    assert json.loads(answer["body"]) == {"a": "é", "n": [1]}
    assert response.request.url == f"{url}/m?x=1"


@pytest.mark.parametrize(
    ("handler", "error"),
    [(_hang_up_after_request, httpx.RemoteProtocolError), (_never_answer, httpx.ReadTimeout)],
)
async def test_post_json_maps_failures_as_post_does(handler: Handler, error: type) -> None:
    async with serving(handler) as url:
        client = outbound_client(timeout=0.3)
        try:
            with pytest.raises(error):
                await post_json(client, f"{url}/x", {})
        finally:
            await client.aclose()
    async with serving(_answer) as url:
        pass  # nothing listens any more: not sent
    client = outbound_client(timeout=1.0)
    try:
        with pytest.raises(httpx.ConnectError):
            await post_json(client, f"{url}/x", {})
    finally:
        await client.aclose()


async def test_post_json_on_another_transport_is_plain_post() -> None:
    seen: list[tuple[str, str | None, bytes]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((str(request.url), request.headers.get("content-type"), request.content))
        return httpx.Response(201, json={"ok": True})

    client = outbound_client(transport=httpx.MockTransport(handler))
    try:
        response = await post_json(client, "http://partner.test/m", {"a": 1}, headers={"x": "y"})
    finally:
        await client.aclose()
    assert (response.status_code, response.json()) == (201, {"ok": True})
    assert seen == [("http://partner.test/m", "application/json", b'{"a":1}')]


async def test_post_json_headers_replace_case_insensitively() -> None:
    async with serving(_echo_head) as url:
        client = outbound_client(timeout=5.0)
        client.headers["X-Who"] = "client"
        try:
            response = await post_json(client, f"{url}/m", {}, headers={
                "x-who": "call", "content-type": "text/plain"})
        finally:
            await client.aclose()
    names = [line.split(": ", 1)[0].lower() for line in response.json()["head"][1:]]
    head = {line.split(": ", 1)[0].lower(): line.split(": ", 1)[1]
            for line in response.json()["head"][1:]}
    assert names.count("x-who") == 1 and head["x-who"] == "call"
    assert names.count("content-type") == 1 and head["content-type"] == "application/json"


async def _redirect_old(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """/old answers 307 to /new; /new answers 201 with its path."""
    while (request := await _read_request(reader)) is not None:
        if request[0][0].split(" ")[1] == "/old":
            writer.write(b"HTTP/1.1 307 Temporary Redirect\r\nlocation: /new\r\n"
                         b"content-length: 0\r\n\r\n")
        else:
            writer.write(b"HTTP/1.1 201 Created\r\ncontent-type: application/json\r\n"
                         b"content-length: 15\r\n\r\n{\"path\":\"/new\"}")
        await writer.drain()


async def test_post_json_follows_redirects_when_the_client_does() -> None:
    async with serving(_redirect_old) as url:
        client = outbound_client(timeout=5.0)
        try:
            assert (await post_json(client, f"{url}/old", {})).status_code == 307
            client.follow_redirects = True
            response = await post_json(client, f"{url}/old", {"a": 1})
        finally:
            await client.aclose()
    assert (response.status_code, response.json()) == (201, {"path": "/new"})
