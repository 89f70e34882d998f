"""Notify: tells the applicant on WhatsApp at every step of the request."""

from __future__ import annotations

from pathlib import Path

import httpx
from fastapi import FastAPI

from shared.runtime import Runtime, ServiceSpec, create_app
from shared.whatsapp.client import WhatsAppClient

from . import api, events, sender, webhooks
from .settings import NotifySettings


async def _start(rt: Runtime) -> None:
    s: NotifySettings = rt.settings  # type: ignore[assignment]
    http = httpx.AsyncClient(
        timeout=s.whatsapp_timeout_s,
        # keep-alive shorter than the server's (30 s here, 5 s uvicorn default) so a connection
        # is never reused just as the server closes it (a ReadError on an accepted send)
        limits=httpx.Limits(max_connections=s.send_concurrency * 2, keepalive_expiry=2.0),
    )
    rt.extras["http"] = http
    rt.extras["whatsapp"] = WhatsAppClient(
        http,
        s.whatsapp_base_url,
        s.whatsapp_phone_number_id,
        s.whatsapp_access_token,
        api_version=s.whatsapp_api_version,
        timeout_s=s.whatsapp_timeout_s,
    )
    rt.waker("sender")


async def _stop(rt: Runtime) -> None:
    await rt.extras["http"].aclose()


def build(settings: NotifySettings | None = None) -> FastAPI:
    settings = settings or NotifySettings()
    spec = ServiceSpec(
        name="notify",
        migrations=Path(__file__).parent / "migrations",
        routers=[api.router, webhooks.router],
        handlers=lambda rt: events.handlers(),
        background=[sender.sender_loop],
        on_start=_start,
        on_stop=_stop,
    )
    return create_app(spec, settings)
