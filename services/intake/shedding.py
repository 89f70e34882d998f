"""Load shedding at the front door: the background sampler and the refusal (the I/O part).

Every ``INTAKE_SHED_SAMPLE_INTERVAL_S`` the sampler reads the two signals ``overload.decide``
needs: the consumer lag of each downstream group (``KAFKA_GROUP_PREFIX`` + printing, courier,
notify: committed offsets from the admin client, end offsets from a group-less consumer, on the
contract's topics under ``KAFKA_TOPIC_PREFIX``) and intake's own outbox backlog. Requests only
look at the last decision (no I/O per request): ``refuse_if_overloaded`` raises the 429.

A signal that cannot be read (Kafka or PostgreSQL away) counts as unknown: it never causes
shedding, one warning says so when it goes away and one info line when it is back. Kafka is
retried with a growing pause meanwhile. A decision older than ``STALE_AFTER_INTERVALS`` samples
(the sampler is stuck) is ignored. State changes are logged; ``/health`` shows the state under
``load_shedding``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from fastapi import Request

from shared.contracts.topics import EVENT_TOPICS
from shared.http import Problem
from shared.logging import get_logger
from shared.outbox import backlog
from shared.runtime import Runtime

from . import overload
from .overload import OPEN, Decision, Signals
from .ratelimit import too_many
from .settings import IntakeSettings

log = get_logger(__name__)

EXTRAS_KEY = "load_shedder"
KAFKA_TIMEOUT_S = 5.0  # one sample's Kafka requests, all together
DB_TIMEOUT_S = 5.0
KAFKA_RETRY_CAP_S = 30.0  # the longest pause between attempts while Kafka is away
STALE_AFTER_INTERVALS = 5
TITLE = "Layanan sedang sibuk / Service busy"
OVERLOADED = "overloaded"  # the problem's code: a client may branch on it


class ConsumerLag:
    """Reads the lag of consumer groups: one admin client and one group-less consumer, kept
    open between samples and dropped after an error (the next read reconnects)."""

    def __init__(self, bootstrap_servers: str, groups: list[str], topics: set[str]) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.groups = groups
        self.topics = topics
        self._admin: AIOKafkaAdminClient | None = None
        self._consumer: AIOKafkaConsumer | None = None

    async def _connect(self) -> tuple[AIOKafkaAdminClient, AIOKafkaConsumer]:
        if self._admin is None or self._consumer is None:
            await self.close()
            timeout_ms = int(KAFKA_TIMEOUT_S * 1000)
            admin = AIOKafkaAdminClient(
                bootstrap_servers=self.bootstrap_servers, request_timeout_ms=timeout_ms,
                client_id="intake-shed-admin",
            )  # fmt: skip
            consumer = AIOKafkaConsumer(
                bootstrap_servers=self.bootstrap_servers, enable_auto_commit=False,
                request_timeout_ms=timeout_ms, client_id="intake-shed-offsets",
            )  # fmt: skip
            self._admin, self._consumer = admin, consumer
            await admin.start()
            await consumer.start()
        return self._admin, self._consumer

    async def read(self) -> dict[str, int]:
        """Events behind per group (a group that never committed has none to count)."""
        admin, consumer = await self._connect()
        committed: dict[str, dict[TopicPartition, int]] = {}
        for group in self.groups:
            offsets = await admin.list_consumer_group_offsets(group)
            committed[group] = {tp: meta.offset for tp, meta in offsets.items()
                                if tp.topic in self.topics and meta.offset >= 0}  # fmt: skip
        partitions = {tp for offsets in committed.values() for tp in offsets}
        ends = await consumer.end_offsets(list(partitions)) if partitions else {}
        return {group: overload.consumer_lag(offsets, ends) for group, offsets in committed.items()}

    async def close(self) -> None:
        admin, consumer, self._admin, self._consumer = self._admin, self._consumer, None, None
        if consumer is not None:
            with contextlib.suppress(Exception):
                await consumer.stop()
        if admin is not None:
            with contextlib.suppress(Exception):
                await admin.close()


class LoadShedder:
    """The front door's state: the last decision, what it was made from, and the sampling."""

    def __init__(
        self,
        settings: IntakeSettings,
        read_backlog: Callable[[], Awaitable[int]],
        lag_reader: ConsumerLag | None = None,
    ) -> None:
        self.settings = settings
        self.thresholds = settings.shed_thresholds
        self.interval_s = settings.intake_shed_sample_interval_s
        self._read_backlog = read_backlog
        groups = [settings.kafka_group_prefix + name for name in settings.intake_shed_groups]
        self.lag_reader = lag_reader or ConsumerLag(
            settings.kafka_bootstrap_servers,
            groups,
            {settings.kafka_topic_prefix + t for t in EVENT_TOPICS},
        )
        self.decision: Decision = OPEN
        self.sampled_at: float | None = None  # time.monotonic() of the last sample
        self.sampled_at_utc: datetime | None = None
        self.lag_by_group: dict[str, int] | None = None
        self.signals = Signals(None, None)
        self.refused = 0
        self._lag_ok = True  # False while Kafka cannot be read (warned once)
        self._backlog_ok = True
        self._kafka_failures = 0
        self._kafka_retry_at = 0.0

    @property
    def enabled(self) -> bool:
        return self.thresholds.enabled

    @property
    def shedding(self) -> bool:
        """The last decision, unless the sampler has not renewed it for a while."""
        return self.decision.shedding and not self.stale

    @property
    def stale(self) -> bool:
        """No sample for a while (the sampler is stuck or gone): its decision no longer counts."""
        if self.sampled_at is None:
            return True
        limit = STALE_AFTER_INTERVALS * self.interval_s + KAFKA_TIMEOUT_S
        return time.monotonic() - self.sampled_at > limit

    # ---- sampling -------------------------------------------------------------------------

    async def _lag(self) -> int | None:
        if not self.thresholds.lag_limit:
            return None
        now = time.monotonic()
        if now < self._kafka_retry_at:
            return None  # Kafka was away: wait before asking again
        try:
            by_group = await asyncio.wait_for(self.lag_reader.read(), KAFKA_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 - any failure: the signal is unknown
            await self.lag_reader.close()
            self._kafka_failures += 1
            pause = min(KAFKA_RETRY_CAP_S, self.interval_s * 2 ** (self._kafka_failures - 1))
            self._kafka_retry_at = time.monotonic() + pause
            self.lag_by_group = None
            if self._lag_ok:
                self._lag_ok = False
                log.warning("load shedding: consumer lag cannot be read, not shedding on it",
                            error=repr(exc))  # fmt: skip
            return None
        self._kafka_failures = 0
        self._kafka_retry_at = 0.0
        if not self._lag_ok:
            self._lag_ok = True
            log.info("load shedding: consumer lag readable again")
        self.lag_by_group = by_group
        return max(by_group.values(), default=0)

    async def _backlog(self) -> int | None:
        if not self.thresholds.backlog_limit:
            return None
        try:
            pending = await asyncio.wait_for(self._read_backlog(), DB_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 - any failure: the signal is unknown
            if self._backlog_ok:
                self._backlog_ok = False
                log.warning("load shedding: outbox backlog cannot be read, not shedding on it",
                            error=repr(exc))  # fmt: skip
            return None
        if not self._backlog_ok:
            self._backlog_ok = True
            log.info("load shedding: outbox backlog readable again")
        return pending

    async def sample_once(self) -> Decision:
        lag, pending = await asyncio.gather(self._lag(), self._backlog())
        return self.apply(Signals(lag, pending))

    def apply(self, signals: Signals) -> Decision:
        """Take a sample: decide, log a change of state, remember it."""
        before = self.decision
        after = overload.decide(signals, self.thresholds, before)
        self.signals = signals
        self.decision = after
        self.sampled_at = time.monotonic()
        self.sampled_at_utc = datetime.now(UTC)
        if after.shedding and not before.shedding:
            log.warning("load shedding started: registrations refused with 429",
                        reason=after.reason, consumer_lag=signals.lag,
                        lag_by_group=self.lag_by_group, outbox_backlog=signals.backlog,
                        lag_limit=self.thresholds.lag_limit,
                        backlog_limit=self.thresholds.backlog_limit,
                        retry_after_s=after.retry_after_s)  # fmt: skip
        elif before.shedding and not after.shedding:
            log.info("load shedding stopped: registrations accepted again",
                     consumer_lag=signals.lag, outbox_backlog=signals.backlog,
                     refused_so_far=self.refused)  # fmt: skip
        return after

    async def run(self) -> None:
        """Sample until cancelled; a failing sample never ends the loop."""
        try:
            while True:
                try:
                    await self.sample_once()
                except asyncio.CancelledError:
                    raise
                except Exception:  # keep sampling; the door stays as it was
                    log.exception("load shedding sample failed")
                await asyncio.sleep(self.interval_s)
        finally:
            await self.lag_reader.close()

    # ---- the door ---------------------------------------------------------------------------

    def refusal(self) -> Problem | None:
        """The 429 for a registration now, or None to let it in (counts the refusals)."""
        if not self.shedding:
            return None
        self.refused += 1
        seconds = self.decision.retry_after_s
        detail = (
            f"Terlalu banyak permohonan sedang diproses. Coba lagi dalam {seconds} detik"
            f" / too many requests are being processed; try again in {seconds} seconds"
        )
        return too_many(seconds, TITLE, detail, code=OVERLOADED)

    def snapshot(self) -> dict[str, Any]:
        """What ``/health`` shows under ``load_shedding``."""
        return {
            "enabled": self.enabled,
            "shedding": self.shedding,
            "stale": self.enabled and self.stale,
            "reason": self.decision.reason,
            "retry_after_s": self.decision.retry_after_s if self.shedding else None,
            "pressure": round(self.decision.pressure, 3),
            "consumer_lag": self.signals.lag,
            "lag_by_group": self.lag_by_group,
            "outbox_backlog": self.signals.backlog,
            "lag_limit": self.thresholds.lag_limit,
            "backlog_limit": self.thresholds.backlog_limit,
            "resume_ratio": self.thresholds.resume_ratio,
            "sampled_at": self.sampled_at_utc.isoformat() if self.sampled_at_utc else None,
            "refused": self.refused,
        }


def shedder_of(rt: Runtime) -> LoadShedder | None:
    shedder = rt.extras.get(EXTRAS_KEY)
    return shedder if isinstance(shedder, LoadShedder) else None


async def refuse_if_overloaded(request: Request) -> None:
    """Route dependency of the registration endpoints: runs before the body is validated, so a
    shed request costs no validation and no database."""
    shedder = shedder_of(request.app.state.rt)
    if shedder is not None and (problem := shedder.refusal()) is not None:
        raise problem


def busy_retry_after(rt: Runtime) -> int | None:
    """Seconds to wait when shedding, None otherwise (for the WhatsApp conversation)."""
    shedder = shedder_of(rt)
    if shedder is None or not shedder.shedding:
        return None
    shedder.refused += 1
    return shedder.decision.retry_after_s


def health_extras(rt: Runtime) -> dict[str, Any]:
    """``load_shedding`` in intake's ``/health`` (``ServiceSpec.health_extras``)."""
    shedder = shedder_of(rt)
    return {"load_shedding": shedder.snapshot() if shedder else None}


async def load_sampler(rt: Runtime) -> None:
    """Background task: create the shedder, show it in /health, sample until stopped."""
    settings: IntakeSettings = rt.settings  # type: ignore[assignment]

    async def read_backlog() -> int:
        async with rt.pool.acquire() as conn:
            return await backlog(conn)

    shedder = LoadShedder(settings, read_backlog)
    rt.extras[EXTRAS_KEY] = shedder
    if not shedder.enabled:
        log.info("load shedding off (INTAKE_SHED_LAG_LIMIT and INTAKE_SHED_BACKLOG_LIMIT are 0)")
        return
    log.info("load shedding on", lag_limit=shedder.thresholds.lag_limit,
             backlog_limit=shedder.thresholds.backlog_limit,
             groups=shedder.lag_reader.groups)  # fmt: skip
    await shedder.run()
