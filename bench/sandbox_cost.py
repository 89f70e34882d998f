"""The sandbox's CPU per request, measured on the sandbox process alone.

In the benchmark the sandbox (the partners and WhatsApp) shares the two cores with the services it
stands in for, so its CPU per lifecycle is CPU the real partners would not take. This starts
``python -m sandbox`` on a free port, its courier URL pointed at a tiny sink in this process that
answers every callback 200 at once, sends ``--n`` requests of each hot kind at ``--concurrency``
(kept-alive connections, ``bench.rawhttp``), and reads the sandbox's CPU time (utime + stime from
/proc/<pid>/stat) around each phase:

- ``whatsapp``: template messages (``POST /whatsapp/{version}/{phone-number-id}/messages``);
- ``jnt_book``, ``pos_book``: bookings with autoplay off;
- ``jnt_webhook``, ``pos_webhook``: bookings with autoplay on (step delay 0, as the benchmark runs
  it), waiting for their 3 callbacks each, minus the same run's booking cost, per callback;
- ``poll_150``: ``GET /sandbox/whatsapp/messages?since=`` answering 150 messages (the benchmark
  polls once a second).

Each run uses a fresh sandbox; the table gives median, min and max over ``--runs``. CPU time, not
wall time: other processes on the machine slow it down less, but still some (caches, SMT).

    .venv/bin/python -m bench.sandbox_cost [--n 3000] [--concurrency 16] [--runs 3] [--root DIR]

``--root`` measures another checkout (e.g. ``git archive <rev> sandbox shared bench | tar -x -C
DIR`` and a ``DIR/.venv`` symlink) to compare before and after.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import urlencode

import orjson

from bench.observe import cpu_seconds
from bench.rawhttp import RawHttp, Response
from bench.stack import free_port
from sandbox.settings import (
    DEFAULT_JNT_API_ACCOUNT,
    DEFAULT_JNT_CUSTOMER_CODE,
    DEFAULT_JNT_PRIVATE_KEY,
    DEFAULT_POS_CLIENT_ID,
    DEFAULT_POS_CLIENT_SECRET,
    DEFAULT_WHATSAPP_ACCESS_TOKEN,
    DEFAULT_WHATSAPP_API_VERSION,
    DEFAULT_WHATSAPP_PHONE_NUMBER_ID,
)
from shared.webhook_signing import jnt_digest

REPO = Path(__file__).resolve().parents[1]
WHATSAPP_PATH = f"/whatsapp/{DEFAULT_WHATSAPP_API_VERSION}/{DEFAULT_WHATSAPP_PHONE_NUMBER_ID}/messages"
RECEIVER = {"name": "Siti Aminah", "mobile": "081234567890", "phone": "081234567890",
            "countryCode": "IDN", "prov": "Jawa Timur", "city": "Kabupaten Mojokerto",
            "area": "Mojosari", "town": "Mojosari",
            "address": "Jl. Raya Mojosari No. 12, RT/RW 003/005, Mojosari", "postCode": "61382"}


class Sink(asyncio.Protocol):
    """The courier service's webhook endpoints: counts the POSTs and answers each 200 at once."""

    received = 0
    _ANSWER = (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 15\r\n\r\n"
               b'{"status":"ok"}')

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            length = 0
            for line in self.buffer[:end].split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            if len(self.buffer) < end + 4 + length:
                return
            self.buffer = self.buffer[end + 4 + length :]
            Sink.received += 1
            self.transport.write(self._ANSWER)  # type: ignore[attr-defined]


def whatsapp_body(i: int) -> bytes:
    parameters = [{"type": "text", "text": t} for t in ("Siti Aminah", "KTP-el", "KTM-ABCD-1234")]
    return orjson.dumps({
        "messaging_product": "whatsapp", "recipient_type": "individual", "to": f"62812{i:08d}",
        "type": "template",
        "template": {"name": "dokumen_dicetak", "language": {"code": "id"},
                     "components": [{"type": "body", "parameters": parameters}]},
        "biz_opaque_callback_data": str(uuid.uuid4())})


def jnt_order(order_ref: str) -> tuple[bytes, dict[str, str]]:
    """As the courier service's J&T adapter sends it: form ``bizContent``, signed."""
    biz = orjson.dumps({
        "customerCode": DEFAULT_JNT_CUSTOMER_CODE, "txlogisticId": order_ref, "serviceType": "01",
        "orderType": "1", "expressType": "EZ", "goodsType": "DOCUMENT", "weight": "0.2",
        "itemsValue": "0", "items": [{"itemName": "KTP-el", "number": 1, "itemValue": "0"}],
        "receiver": RECEIVER, "codInfo": {"codValue": "20000"}, "remark": "KTP-el"}).decode()
    headers = {"apiAccount": DEFAULT_JNT_API_ACCOUNT,
               "digest": jnt_digest(biz, DEFAULT_JNT_PRIVATE_KEY),
               "timestamp": str(int(time.time() * 1000))}
    return urlencode({"bizContent": biz}).encode(), headers


def pos_order(order_ref: str) -> bytes:
    return orjson.dumps({
        "orderid": order_ref, "receivername": "Siti Aminah", "receiverphone": "081234567890",
        "receiveraddress": "Jl. Raya Mojosari No. 12, RT/RW 003/005",
        "receivercity": "Kabupaten Mojokerto", "receiverzipcode": "61382", "cod": True,
        "codvalue": 20000, "itemdesc": "KTP-el", "weight": 200})


class Driver:
    def __init__(self, base: str, pid: int, concurrency: int) -> None:
        self.base, self.pid, self.concurrency = base, pid, concurrency
        self.http = RawHttp(max_connections_per_host=concurrency)
        self.pos_token = ""
        self.since = 0.0

    def whatsapp(self, i: int) -> Awaitable[Response]:
        auth = {"authorization": f"Bearer {DEFAULT_WHATSAPP_ACCESS_TOKEN}"}
        return self.http.request("POST", self.base + WHATSAPP_PATH, whatsapp_body(i), auth)

    def jnt(self, _: int) -> Awaitable[Response]:
        body, headers = jnt_order(f"jnt-{uuid.uuid4()}")
        return self.http.request("POST", f"{self.base}/jnt/api/order/addOrder", body, headers)

    def pos(self, _: int) -> Awaitable[Response]:
        auth = {"authorization": f"Bearer {self.pos_token}"}
        url = f"{self.base}/pos/api/v1/orders"
        return self.http.request("POST", url, pos_order(f"pos-{uuid.uuid4()}"), auth)

    def poll(self, _: int) -> Awaitable[Response]:
        url = f"{self.base}/sandbox/whatsapp/messages"
        return self.http.get(url, {"since": repr(self.since)})

    async def start(self) -> None:
        for _ in range(100):
            try:
                (await self.http.get(f"{self.base}/sandbox/health")).raise_for_status()
                break
            except OSError:
                await asyncio.sleep(0.1)
        form = urlencode({"grant_type": "client_credentials", "client_id": DEFAULT_POS_CLIENT_ID,
                          "client_secret": DEFAULT_POS_CLIENT_SECRET}).encode()
        token = await self.http.request("POST", f"{self.base}/pos/oauth2/token", form)
        self.pos_token = token.json()["access_token"]

    async def autoplay(self, on: bool) -> None:
        r = await self.http.post(f"{self.base}/sandbox/config", {"autoplay": on})
        r.raise_for_status()

    async def fan(self, n: int, one: Callable[[int], Awaitable[Response]]) -> None:
        numbers = iter(range(n))

        async def worker() -> None:
            for i in numbers:
                r = await one(i)
                if r.status_code >= 300:
                    raise RuntimeError(f"HTTP {r.status_code}: {r.text[:200]}")

        await asyncio.gather(*(worker() for _ in range(self.concurrency)))

    async def cost_us(
        self, n: int, one: Callable[[int], Awaitable[Response]], callbacks: int = 0
    ) -> float:
        """Sandbox CPU µs per request of ``one``, and of the ``callbacks`` they cause."""
        awaited = Sink.received + callbacks
        before = cpu_seconds([self.pid])
        await self.fan(n, one)
        deadline = time.monotonic() + 120
        while Sink.received < awaited:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{awaited - Sink.received} of {callbacks} callbacks missing")
            await asyncio.sleep(0.005)
        return (cpu_seconds([self.pid]) - before) / n * 1e6


async def one_run(root: Path, n: int, concurrency: int, sink_port: int) -> dict[str, float]:
    port = free_port()
    env = os.environ | {
        "SANDBOX_HOST": "127.0.0.1", "SANDBOX_PORT": str(port),
        "SANDBOX_COURIER_URL": f"http://127.0.0.1:{sink_port}", "SANDBOX_AUTOPLAY": "false",
        "SANDBOX_STEP_DELAY_MS": "0", "SANDBOX_CALLBACK_CONCURRENCY": "128",  # as bench/stack.py
    }
    sandbox = await asyncio.create_subprocess_exec(
        str(root / ".venv/bin/python"), "-m", "sandbox", cwd=root, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    d = Driver(f"http://127.0.0.1:{port}", sandbox.pid, concurrency)
    try:
        await d.start()
        for one in (d.whatsapp, d.jnt, d.pos):  # warm-up
            await d.fan(200, one)
        cost = {"whatsapp": await d.cost_us(n, d.whatsapp),
                "jnt_book": await d.cost_us(n, d.jnt),
                "pos_book": await d.cost_us(n, d.pos)}
        await d.autoplay(True)
        lives = max(n // 3, 1)
        jnt_life = await d.cost_us(lives, d.jnt, callbacks=3 * lives)
        pos_life = await d.cost_us(lives, d.pos, callbacks=3 * lives)
        await d.autoplay(False)
        cost["jnt_webhook"] = (jnt_life - cost["jnt_book"]) / 3
        cost["pos_webhook"] = (pos_life - cost["pos_book"]) / 3
        messages = (await d.http.get(f"{d.base}/sandbox/whatsapp/messages")).json()["messages"]
        d.since = messages[-150]["received_at_epoch"]
        cost["poll_150"] = await d.cost_us(max(n // 10, 50), d.poll)
        return cost
    finally:
        await d.http.aclose()
        sandbox.terminate()
        await asyncio.wait_for(sandbox.wait(), 10)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=3000, help="requests of each kind per run")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--root", type=Path, default=REPO, help="the checkout to measure")
    o = parser.parse_args()
    sink_port = free_port()
    sink = await asyncio.get_running_loop().create_server(Sink, "127.0.0.1", sink_port)
    runs = []
    for number in range(1, o.runs + 1):
        runs.append(await one_run(o.root, o.n, o.concurrency, sink_port))
        print(f"run {number}: " + "  ".join(f"{k} {v:.0f}" for k, v in runs[-1].items()),
              flush=True)
    sink.close()
    print(f"\nsandbox CPU µs per request ({o.root}, n={o.n}, concurrency {o.concurrency})")
    print(f"{'':12} {'median':>7} {'min':>7} {'max':>7}")
    for key in runs[0]:
        values = [run[key] for run in runs]
        print(f"{key:12} {statistics.median(values):7.0f} {min(values):7.0f} {max(values):7.0f}")
    m = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
    lifecycle = (5 * m["whatsapp"] + (m["jnt_book"] + m["pos_book"]) / 2
                 + 3 * (m["jnt_webhook"] + m["pos_webhook"]) / 2)
    print(f"\nper lifecycle (5 messages, a booking, 3 callbacks; half J&T, half Pos; polls aside):"
          f" {lifecycle:.0f} µs")


if __name__ == "__main__":
    asyncio.run(main())
