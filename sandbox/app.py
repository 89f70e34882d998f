"""The sandbox's FastAPI app: partner APIs under /jnt, /pos, /whatsapp; control under /sandbox."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI

from sandbox import control, jnt, pos, whatsapp
from sandbox.settings import SandboxSettings
from sandbox.world import World


def create_app(
    settings: SandboxSettings | None = None,
    *,
    callback_transport: httpx.AsyncBaseTransport | None = None,
) -> FastAPI:
    """``callback_transport`` lets tests receive the callbacks in-process instead of over TCP."""
    world = World(settings or SandboxSettings(), callback_transport)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await world.aclose()

    app = FastAPI(title="Ketanmu partner sandbox", lifespan=lifespan)
    app.state.world = world
    for module in (jnt, pos, whatsapp, control):
        app.include_router(module.router)
    return app
