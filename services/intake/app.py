"""Intake: the front door. Registers requests (web, WhatsApp, counter) and keeps the status the
applicant sees; public tracking; the retention job."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from shared.http import JsonBodyGuard
from shared.http_client import outbound_client
from shared.runtime import Runtime, ServiceSpec, create_app
from shared.whatsapp.client import WhatsAppClient

from . import api, events, replies, retention, shedding, tracking, whatsapp
from .auth import seed_operators
from .settings import IntakeSettings


async def _start(rt: Runtime) -> None:
    s: IntakeSettings = rt.settings  # type: ignore[assignment]
    async with rt.pool.acquire() as conn:
        await seed_operators(conn, s.intake_operators)
    http = outbound_client(timeout=s.whatsapp_timeout_s)
    rt.extras["http"] = http
    rt.extras["whatsapp"] = WhatsAppClient(
        http,
        s.whatsapp_base_url,
        s.whatsapp_phone_number_id,
        s.whatsapp_access_token,
        api_version=s.whatsapp_api_version,
    )
    rt.waker(replies.WAKER)


async def _stop(rt: Runtime) -> None:
    if "http" in rt.extras:
        await rt.extras["http"].aclose()


def build(settings: IntakeSettings | None = None) -> FastAPI:
    settings = settings or IntakeSettings()
    spec = ServiceSpec(
        name="intake",
        migrations=Path(__file__).parent / "migrations",
        routers=[api.router, tracking.router, whatsapp.router],
        handlers=lambda rt: events.handlers(),
        batch_handler=lambda rt: events.apply_batch,
        background=[replies.reply_sender, retention.retention_loop, shedding.load_sampler],
        on_start=_start,
        on_stop=_stop,
        health_extras=shedding.health_extras,
        wake_after_consume=[],  # the reply sender's rows come from the WhatsApp webhook only
        direct_endpoints=[api.register_request],  # one a lifecycle (shared.http.DirectRoutes)
    )
    app = create_app(spec, settings)
    # Outermost: oversized, non-JSON and malformed bodies never reach a route.
    app.add_middleware(JsonBodyGuard, max_bytes=settings.max_body_bytes)
    return app
