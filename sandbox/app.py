"""The sandbox's FastAPI app: partner APIs under /jnt, /pos, /whatsapp; control under /sandbox."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.routing import APIRoute
from starlette.routing import Match
from starlette.types import Receive, Scope, Send

from sandbox import control, jnt, pos, whatsapp
from sandbox.settings import SandboxSettings
from sandbox.world import World

# The partner calls of every lifecycle: 5 WhatsApp messages, a booking, now and then a Pos token.
# Their endpoints take only the Request and str path parameters and return a ready Response, so
# FastAPI's per-request machinery (its telemetry, error and body-limit middlewares, every route
# tried in turn, parameters solved, exception and exit-stack wrappers) does nothing for them but
# cost more CPU than they do. SandboxApp calls these same functions directly; FastAPI still routes
# and documents them, and serves every other request.
HOT_ENDPOINTS = (whatsapp.send_message, jnt.add_order, pos.create_order, pos.token)


class SandboxApp(FastAPI):
    """FastAPI, with a fast path for the routes in ``hot_routes``."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.hot_routes: list[APIRoute] = []

    def serve_directly(self, route: APIRoute) -> None:
        """Serve ``route`` without FastAPI's machinery: it needs nothing but the Request and its
        path parameters (checked here, so a hot endpoint cannot silently lose a FastAPI feature)."""
        d = route.dependant
        path_params = {p.name for p in d.path_params}
        takes = set(inspect.signature(route.endpoint).parameters)
        if (
            d.query_params or d.header_params or d.cookie_params or d.body_params
            or d.dependencies or d.request_param_name != "request"
            or takes != path_params | {"request"}
        ):
            raise TypeError(f"{route.path}: a hot endpoint takes only `request` and path params")
        self.hot_routes.append(route)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for route in self.hot_routes:
                match, child_scope = route.matches(scope)  # Starlette's own path matching
                if match is Match.FULL:
                    scope["app"] = self  # what Starlette sets: request.app.state.world
                    scope.update(child_scope)
                    request = Request(scope, receive, send)
                    response = await route.endpoint(request=request, **scope["path_params"])
                    await response(scope, receive, send)
                    return
        await super().__call__(scope, receive, send)


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

    app = SandboxApp(title="Ketanmu partner sandbox", lifespan=lifespan)
    app.state.world = world
    routers = [module.router for module in (jnt, pos, whatsapp, control)]
    for router in routers:
        app.include_router(router)  # as they are: no prefix, their routes' paths are the app's
    for router in routers:
        for route in router.routes:
            if isinstance(route, APIRoute) and route.endpoint in HOT_ENDPOINTS:
                app.serve_directly(route)
    assert len(app.hot_routes) == len(HOT_ENDPOINTS)
    return app
