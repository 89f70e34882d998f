"""Intake: the front door. Registers requests and keeps the status the applicant sees."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from shared.runtime import ServiceSpec, create_app

from . import api, events
from .settings import IntakeSettings


def build(settings: IntakeSettings | None = None) -> FastAPI:
    settings = settings or IntakeSettings()
    spec = ServiceSpec(
        name="intake",
        migrations=Path(__file__).parent / "migrations",
        routers=[api.router],
        handlers=lambda rt: events.handlers(),
    )
    return create_app(spec, settings)
