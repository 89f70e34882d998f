"""Notify: tells the applicant on WhatsApp at every step of the request."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from shared.db.pool import create_pool
from shared.http_client import outbound_client
from shared.runtime import Runtime, ServiceSpec, create_app
from shared.whatsapp.client import WhatsAppClient

from . import api, events, retention, sender, webhooks
from .settings import NotifySettings


async def _start(rt: Runtime) -> None:
    s: NotifySettings = rt.settings  # type: ignore[assignment]
    # httpx's API on our keep-alive connections (shared/http_client.py)
    http = outbound_client(timeout=s.whatsapp_timeout_s, max_connections=s.send_concurrency * 2)
    rt.extras["http"] = http
    rt.extras["whatsapp"] = WhatsAppClient(
        http,
        s.whatsapp_base_url,
        s.whatsapp_phone_number_id,
        s.whatsapp_access_token,
        api_version=s.whatsapp_api_version,
        timeout_s=s.whatsapp_timeout_s,
    )
    # The sender's claims and batch stores, on connections of their own that plan each statement
    # once (services/notify/sender.py, "Planned once").
    rt.extras["sender_pool"] = await create_pool(
        s.database_url, s.db_schema, 1, 2, server_settings=sender.SENDER_POOL_SETTINGS
    )
    rt.waker("sender")


async def _stop(rt: Runtime) -> None:
    try:
        await rt.extras["http"].aclose()
    finally:
        await rt.extras["sender_pool"].close()


def build(settings: NotifySettings | None = None) -> FastAPI:
    settings = settings or NotifySettings()
    spec = ServiceSpec(
        name="notify",
        migrations=Path(__file__).parent / "migrations",
        routers=[api.router, webhooks.router],
        handlers=lambda rt: events.handlers(),
        batch_handler=lambda rt: events.apply_batch,
        background=[sender.sender_loop, retention.retention_loop],
        on_start=_start,
        on_stop=_stop,
    )
    return create_app(spec, settings)
