"""The load: applicants registering over HTTP at a set rate, and an operator robot printing.

Every request gets its own phone number, so each WhatsApp message the sandbox records belongs to
exactly one request, and its own NIK, so intake's "same request still open" rule never refuses one.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from dataclasses import dataclass, field

from bench.rawhttp import HttpStatusError, RawHttp
from deploy.local.demo import print_job, sample_request

OPERATOR = "operator-bench"


@dataclass
class Lifecycle:
    """One request as the benchmark saw it; times are epoch seconds."""

    request_id: str
    step: str
    wa_id: str
    sent_at: float
    accepted_at: float
    messages: dict[str, list[float]] = field(default_factory=dict)  # template -> received times


class Applicants:
    def __init__(self, seed: int | None = None) -> None:
        self.rng = random.Random(seed)
        self.count = 0
        self._phone_base = self.rng.randrange(10**7, 9 * 10**7)

    def next(self) -> tuple[dict[str, object], str]:
        """A request body and the WhatsApp id (``62812...``) its messages will be sent to."""
        i = self.count
        self.count += 1
        body = sample_request(self.rng)
        serial, rest = i % 9999 + 1, i // 9999
        day = self.rng.randint(1, 28) + (40 if self.rng.random() < 0.5 else 0)
        nik = f"3516{self.rng.randint(1, 18):02d}{day:02d}{rest // 40 % 12 + 1:02d}{60 + rest % 40:02d}{serial:04d}"
        phone = f"0812{self._phone_base + i:08d}"
        body["applicant"]["nik"] = nik  # type: ignore[index]
        body["applicant"]["phone"] = phone  # type: ignore[index]
        return body, "62" + phone[1:]


@dataclass
class DriveResult:
    planned: int
    sent: int = 0
    accepted: int = 0
    late: int = 0  # sends more than 100 ms behind schedule
    # 429s: intake shedding load on purpose (a refusal with Retry-After, nothing half-done). Not
    # an error, but a step with any is not one the system kept up with.
    shed: int = 0
    # sends that found every slot taken (``concurrency`` requests in flight): the HTTP front did
    # not keep up. A late send alone can also be the generator's own process descheduled for a
    # moment on a saturated machine.
    bound_reached: int = 0
    seconds: float = 0.0
    http_ms: list[float] = field(default_factory=list)

    @property
    def achieved_rate(self) -> float:
        return self.sent / self.seconds if self.seconds else 0.0


class Generator:
    """Open-loop arrivals at ``rate`` per second, at most ``concurrency`` requests in flight."""

    def __init__(self, http: RawHttp, intake_url: str, applicants: Applicants,
                 ledger: dict[str, Lifecycle], errors: Counter[str], concurrency: int = 64) -> None:
        self.http = http
        self.url = f"{intake_url}/requests"
        self.applicants = applicants
        self.ledger = ledger
        self.errors = errors
        self.slots = asyncio.Semaphore(concurrency)
        self.on_accept: list = []

    async def drive(self, rate: float, seconds: float, step: str) -> DriveResult:
        result = DriveResult(planned=max(1, round(rate * seconds)))
        tasks: set[asyncio.Task[None]] = set()
        start = time.monotonic()
        for i in range(result.planned):
            due = start + i / rate
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if self.slots.locked():
                result.bound_reached += 1
            await self.slots.acquire()
            if time.monotonic() - due > 0.1:
                result.late += 1
            result.sent += 1
            task = asyncio.create_task(self._one(step, result))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        result.seconds = max(time.monotonic() - start, 1e-9)
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        return result

    async def _one(self, step: str, result: DriveResult) -> None:
        try:
            body, wa_id = self.applicants.next()
            headers = {"Idempotency-Key": f"bench-{wa_id}"}
            sent = time.time()
            try:
                response = await self.http.post(self.url, json=body, headers=headers)
            except Exception as exc:  # noqa: BLE001 - counted, the load goes on
                self.errors[f"register: {type(exc).__name__}"] += 1
                return
            accepted = time.time()
            result.http_ms.append((accepted - sent) * 1000)
            if response.status_code == 429:
                result.shed += 1
                return
            if response.status_code != 201:
                self.errors[f"register: HTTP {response.status_code}"] += 1
                return
            request_id = response.json()["request_id"]
            self.ledger[request_id] = Lifecycle(request_id, step, wa_id, sent, accepted)
            result.accepted += 1
            for callback in self.on_accept:
                callback(request_id)
        finally:
            self.slots.release()


class OperatorRobot:
    """Like an operator at the print queue: takes the next free jobs as a stack
    (``POST /print-jobs/claim-next``; when the queue held fewer than asked for, again ``poll_s``
    later) and marks each printed (``deploy.local.demo.print_job``). With several printing
    instances the robot spreads its calls over them.

    A claim-next whose answer was lost (an error) may still have claimed a stack: the robot then
    lists the jobs claimed in its name and prints those it is not printing already, as an operator
    would look at her own pile. A job whose print failed stays claimed by the robot and is picked
    up the same way after the next error, or by claim-next once its lease runs out.

    Until the twelfth round (bench/README.md) it listed the queue and claimed each job on its own
    (``deploy.local.demo.mark_printed``): one more request and two more statements per job.
    """

    def __init__(self, http: RawHttp, printing_urls: list[str], errors: Counter[str],
                 concurrency: int = 32, poll_s: float = 0.1) -> None:
        self.http = http
        self.urls = list(printing_urls)
        self.errors = errors
        self.poll_s = poll_s
        self.concurrency = concurrency
        self.printing: set[str] = set()  # request ids being printed now
        self.printed = 0
        self._task: asyncio.Task[None] | None = None
        self._turn = 0
        self._inflight: set[asyncio.Task[None]] = set()

    def _url(self) -> str:
        self._turn += 1
        return self.urls[self._turn % len(self.urls)]

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="operator-robot")

    async def stop(self) -> None:
        from bench.observe import cancel

        await cancel(self._task)
        for task in list(self._inflight):
            task.cancel()

    async def _take(self, free: int, own_pile: bool) -> list[str]:
        if own_pile:  # after an error: what is claimed in the robot's name, in flight or not
            response = await self.http.get(f"{self._url()}/print-jobs", params={
                "status": "claimed", "claimed_by": OPERATOR, "limit": 1000})
        else:  # not safe to repeat: a retry would take a second stack
            response = await self.http.post(f"{self._url()}/print-jobs/claim-next",
                                            json={"operator": OPERATOR, "limit": free},
                                            retry=False)
        response.raise_for_status()
        return [job["request_id"] for job in response.json()["jobs"]]

    async def _run(self) -> None:
        own_pile = False
        while True:
            # Take only as many jobs as the robot can print now: a claimed job waits for nobody
            # else, so a stack larger than that would only wait longer in the robot's hands.
            free = self.concurrency - len(self._inflight)
            if free <= 0 and not own_pile:
                await asyncio.sleep(self.poll_s)
                continue
            try:
                taken = await self._take(free, own_pile)
            except Exception as exc:  # noqa: BLE001 - counted, the robot goes on
                self.errors[f"print queue: {type(exc).__name__}"] += 1
                own_pile = True
                await asyncio.sleep(0.5)
                continue
            asked, own_pile = not own_pile, False
            for request_id in taken:
                if request_id in self.printing:
                    continue
                self.printing.add(request_id)
                task = asyncio.create_task(self._print(request_id))
                self._inflight.add(task)
                task.add_done_callback(self._inflight.discard)
            if asked and len(taken) < free:
                await asyncio.sleep(self.poll_s)

    async def _print(self, request_id: str) -> None:
        try:
            await print_job(self.http, self._url(), request_id, OPERATOR)  # type: ignore[arg-type]
            self.printed += 1
        except (HttpStatusError, RuntimeError) as exc:
            self.errors[f"print: {str(exc)[:60]}"] += 1
        except Exception as exc:  # noqa: BLE001
            self.errors[f"print: {type(exc).__name__}"] += 1
        finally:
            self.printing.discard(request_id)
