"""What every service process runs: database, migrations, consumer, outbox relay, HTTP.

A service describes itself with a ``ServiceSpec``; ``create_app`` turns it into a FastAPI app
whose lifespan starts and stops everything in order. ``serve`` runs it under uvicorn (uvloop).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import APIRouter, FastAPI
from faststream.kafka import KafkaBroker

from shared.db.pool import Pool, create_pool, migrate, wait_for_database
from shared.gc_tuning import settle_gc
from shared.http import (
    DirectEndpoint,
    RequestContextMiddleware,
    install_error_handlers,
    problem_response,
    serve_directly,
)
from shared.kafka.consumer import BatchHandler, EventConsumer, Handler
from shared.logging import configure_logging, get_logger
from shared.outbox import OutboxRelay, backlog
from shared.settings import ServiceSettings

log = get_logger(__name__)

BackgroundTask = Callable[["Runtime"], Awaitable[None]]


@dataclass
class ServiceSpec:
    name: str
    migrations: Path
    routers: list[APIRouter] = field(default_factory=list)
    # endpoints of ``routers`` that every lifecycle calls, served past FastAPI's routing and
    # request handling (shared.http.serve_directly says which qualify; their answers, errors
    # included, are FastAPI's)
    direct_endpoints: list[DirectEndpoint] = field(default_factory=list)
    # topic -> handler(conn, event); empty for a service that consumes nothing
    handlers: Callable[[Runtime], Mapping[str, Handler]] | None = None
    # optional: applies a whole consumed batch at once (see shared.kafka.consumer.BatchHandler);
    # ``handlers`` still name the topics and apply events one by one when a batch fails
    batch_handler: Callable[[Runtime], BatchHandler] | None = None
    # long-running loops started after the consumer (e.g. booking worker, WhatsApp sender)
    background: list[BackgroundTask] = field(default_factory=list)
    # called once resources exist, before consuming starts (e.g. build httpx clients)
    on_start: Callable[[Runtime], Awaitable[None]] | None = None
    on_stop: Callable[[Runtime], Awaitable[None]] | None = None
    # the wakers (``Runtime.waker``) to set after a consumed batch commits, for loops that work
    # on what consuming wrote; None: all of them
    wake_after_consume: list[str] | None = None
    # more fields for /health (e.g. intake's load shedding state)
    health_extras: Callable[[Runtime], Mapping[str, Any]] | None = None


class Runtime:
    """The live resources of one service process; routes reach it as ``request.app.state.rt``."""

    def __init__(self, spec: ServiceSpec, settings: ServiceSettings) -> None:
        self.spec = spec
        self.settings = settings
        self._pool: Pool | None = None
        self.relay = OutboxRelay(
            dsn=settings.database_url,
            schema=settings.db_schema,
            bootstrap_servers=settings.kafka_bootstrap_servers,
            batch_size=settings.outbox_batch_size,
            poll_interval_s=settings.outbox_poll_interval_s,
            linger_s=settings.outbox_linger_ms / 1000,
            topic_prefix=settings.kafka_topic_prefix,
        )
        self.broker: KafkaBroker | None = None
        self.consumer: EventConsumer | None = None
        self.extras: dict[str, Any] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self.wakers: dict[str, asyncio.Event] = {}

    @property
    def pool(self) -> Pool:
        assert self._pool is not None, "runtime not started"
        return self._pool

    @property
    def schema(self) -> str:
        return self.settings.db_schema

    def waker(self, name: str) -> asyncio.Event:
        return self.wakers.setdefault(name, asyncio.Event())

    def _wake_after_consume(self) -> None:
        # Not the outbox relay: the code that adds outbox rows wakes it after the commit
        # (shared.outbox.wake_relay); waking it after every batch made it query an empty outbox
        # each time. Nor a loop that consuming never feeds (``ServiceSpec.wake_after_consume``):
        # each wake-up is a claim query.
        names = self.spec.wake_after_consume
        for name, event in self.wakers.items():
            if names is None or name in names:
                event.set()

    async def start(self) -> None:
        s = self.settings
        await wait_for_database(s.database_url)
        await migrate(s.database_url, s.db_schema, self.spec.migrations)
        self._pool = await create_pool(s.database_url, s.db_schema, s.db_pool_min, s.db_pool_max)
        if self.spec.on_start:
            await self.spec.on_start(self)
        await self.relay.start()
        if self.spec.handlers:
            self.broker = KafkaBroker(
                s.kafka_bootstrap_servers,
                allow_auto_create_topics=False,
                # our logger propagates to the structlog handler (JSON, masked) at WARNING and up;
                # FastStream's own "faststream" logger has a coloured handler of its own
                logger=logging.getLogger("ketanmu.broker"),
                log_level=logging.DEBUG,  # no per-message framework logging in production
                # no dependency injection: our one handler takes the message from the context
                # (shared.kafka.consumer); FastDepends resolved it in a worker thread per batch
                apply_types=False,
                graceful_timeout=10.0,
            )
            self.consumer = EventConsumer(
                service=s.service_name,
                group_id=s.consumer_group,
                pool_provider=lambda: self.pool,
                handlers=self.spec.handlers(self),
                batch_handler=self.spec.batch_handler(self) if self.spec.batch_handler else None,
                after_commit=[self._wake_after_consume],
                max_records=s.kafka_batch_max_records,
                batch_timeout_ms=s.kafka_batch_timeout_ms,
                topic_prefix=s.kafka_topic_prefix,
                fetch_min_bytes=s.kafka_fetch_min_bytes,
                fetch_max_wait_ms=s.kafka_fetch_max_wait_ms,
            )
            self.consumer.attach(self.broker)
            await self._start_broker()
        for task in self.spec.background:
            self._tasks.append(asyncio.create_task(task(self), name=task.__name__))
        settle_gc()
        log.info("service started", port=s.http_port, consumer_group=s.consumer_group)

    async def _start_broker(self) -> None:
        assert self.broker is not None
        delay = 0.5
        while True:
            try:
                await self.broker.start()
                return
            except Exception as exc:  # noqa: BLE001 - broker not reachable yet: wait for it
                log.warning("kafka not reachable, retrying", error=repr(exc), retry_in_s=delay)
                with contextlib.suppress(Exception):
                    await self.broker.stop()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.broker:
            await self.broker.stop()
        await self.relay.stop()
        if self.spec.on_stop:
            await self.spec.on_stop(self)
        if self._pool:
            await self._pool.close()
        log.info("service stopped")

    async def health(self) -> dict[str, Any]:
        async with self.pool.acquire() as conn:
            pending = await backlog(conn)
        return {
            "service": self.settings.service_name,
            "status": "ok",
            "outbox_backlog": pending,
            "outbox_relay_active": self.relay.is_leader,
            "consumer": self.consumer.stats.__dict__ if self.consumer else None,
        } | (dict(self.spec.health_extras(self)) if self.spec.health_extras else {})


def create_app(spec: ServiceSpec, settings: ServiceSettings) -> FastAPI:
    configure_logging(settings.service_name, settings.log_level, settings.log_json)
    runtime = Runtime(spec, settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await runtime.start()
        try:
            yield
        finally:
            await runtime.stop()

    app = FastAPI(
        title=f"Ketanmu {spec.name}",
        lifespan=lifespan,
        # FastAPI's native OpenTelemetry: off unless an OTel SDK provider is configured, which we
        # never do (no SDK installed), yet it checks the providers on every request (~8 us)
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.rt = runtime
    install_error_handlers(app)
    app.add_middleware(RequestContextMiddleware)

    @app.get("/health", tags=["ops"])
    async def health() -> Any:
        try:
            return await runtime.health()
        except Exception as exc:  # noqa: BLE001 - health reports, never crashes
            return problem_response(503, "unhealthy", repr(exc))

    for router in spec.routers:
        app.include_router(router)
    if spec.direct_endpoints:
        serve_directly(app, spec.direct_endpoints)
    return app


def serve(app: FastAPI, settings: ServiceSettings) -> None:
    uvicorn.run(
        app,
        host=settings.http_host,
        port=settings.http_port,
        loop="uvloop",
        log_config=None,
        access_log=False,
        timeout_keep_alive=30,  # longer than our clients' keep-alive (2 s): no reuse-while-closing
        timeout_graceful_shutdown=10,
    )
