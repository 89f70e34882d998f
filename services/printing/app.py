"""Printing: the operators' print queue and document numbers."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from shared.runtime import ServiceSpec, create_app

from . import api, events, retention
from .settings import PrintingSettings


def build(settings: PrintingSettings | None = None) -> FastAPI:
    settings = settings or PrintingSettings()
    spec = ServiceSpec(
        name="printing",
        migrations=Path(__file__).parent / "migrations",
        routers=[api.router],
        handlers=lambda rt: events.handlers(),
        # a consumed batch's registrations are queued with one INSERT (events.apply_batch)
        batch_handler=lambda rt: events.apply_batch,
        background=[retention.retention_loop],
        # a print a lifecycle, a stack now and then (shared.http.DirectRoutes)
        direct_endpoints=[api.mark_printed, api.claim_next],
    )
    return create_app(spec, settings)
