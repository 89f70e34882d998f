"""Courier: books shipments with Pos or J&T (COD = the shipping fee) and turns their callbacks
into handed-to-courier, cod-paid, delivered (and the failures)."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from shared.http_client import outbound_client
from shared.runtime import Runtime, ServiceSpec, create_app

from . import api, booking, cod, events, originals, retention, service_levels, webhooks
from .partners import Address, Sender, build_partners
from .settings import CourierSettings


async def _start(rt: Runtime) -> None:
    s: CourierSettings = rt.settings  # type: ignore[assignment]
    # httpx's API on our keep-alive connections (shared/http_client.py)
    http = outbound_client(max_connections=s.booking_concurrency * 2)
    rt.extras["http"] = http
    rt.extras["partners"] = build_partners(
        http,
        jnt_base_url=s.jnt_base_url,
        jnt_api_account=s.jnt_api_account,
        jnt_private_key=s.jnt_private_key,
        jnt_customer_code=s.jnt_customer_code,
        pos_base_url=s.pos_base_url,
        pos_client_id=s.pos_client_id,
        pos_client_secret=s.pos_client_secret,
        pos_webhook_secret=s.pos_webhook_secret,
        timeout_s=s.partner_timeout_s,
        sender=Sender(
            name=s.office_name,
            phone=s.office_phone,
            address=Address(
                street=s.office_street,
                rt_rw=s.office_rt_rw,
                kelurahan=s.office_kelurahan,
                kecamatan=s.office_kecamatan,
                kabupaten_kota=s.office_kabupaten_kota,
                provinsi=s.office_provinsi,
                postal_code=s.office_postal_code,
            ),
        ),
    )
    for name in rt.extras["partners"]:
        rt.waker(f"booking:{name}")


async def _stop(rt: Runtime) -> None:
    await rt.extras["http"].aclose()


def build(settings: CourierSettings | None = None) -> FastAPI:
    settings = settings or CourierSettings()
    spec = ServiceSpec(
        name="courier",
        migrations=Path(__file__).parent / "migrations",
        routers=[webhooks.router, api.router, cod.router, originals.router, service_levels.router],
        direct_endpoints=[webhooks.partner_webhook],  # three a lifecycle (shared.http.DirectRoutes)
        handlers=lambda rt: events.handlers(),
        batch_handler=lambda rt: events.apply_batch,
        background=[booking.booking_worker, retention.retention_loop],
        on_start=_start,
        on_stop=_stop,
    )
    return create_app(spec, settings)
