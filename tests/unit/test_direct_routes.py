"""shared/http.py serve_directly: hot endpoints past FastAPI's routing, inside every middleware."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse

from shared.http import (
    DirectRoutes,
    Problem,
    RequestContextMiddleware,
    install_error_handlers,
    serve_directly,
)

router = APIRouter()


@router.post("/hooks/{partner}")
async def hook(partner: str, request: Request) -> Any:
    body = await request.body()
    if partner == "boom":
        raise Problem(404, "Unknown thing", "boom")
    return JSONResponse({"partner": partner, "body": body.decode(),
                         "rt": request.app.state.marker,
                         "request_id": request.state.request_id})


@router.get("/other/{x}")
async def other(x: str) -> Any:
    return {"x": x}


def _app() -> FastAPI:
    app = FastAPI()
    app.state.marker = "app-state"
    install_error_handlers(app)
    app.add_middleware(RequestContextMiddleware)
    app.include_router(router)
    return app


async def _call(app: FastAPI, method: str, path: str, **kw: Any) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://t") as client:
        return await client.request(method, path, **kw)


async def test_a_direct_endpoint_answers_as_through_fastapi_without_its_router() -> None:
    app = _app()
    serve_directly(app, [hook])
    routed: list[str] = []
    real = app.router.__class__.__call__

    async def spy(self: Any, scope: Any, receive: Any, send: Any) -> None:
        routed.append(scope["path"])
        await real(self, scope, receive, send)

    app.router.__class__.__call__ = spy  # type: ignore[method-assign]
    try:
        answer = await _call(app, "POST", "/hooks/jnt", content=b"hi",
                             headers={"x-request-id": "r-1"})
        assert answer.status_code == 200
        assert answer.json() == {"partner": "jnt", "body": "hi", "rt": "app-state",
                                 "request_id": "r-1"}
        assert answer.headers["x-request-id"] == "r-1"  # the middleware still ran
        # the app's exception handlers still answer for it
        problem = await _call(app, "POST", "/hooks/boom")
        assert problem.status_code == 404
        assert problem.headers["content-type"].startswith("application/problem+json")
        assert routed == []  # FastAPI's router never saw them
        # other routes, and other methods on the direct path, go to the router as before
        assert (await _call(app, "GET", "/other/5")).json() == {"x": "5"}
        assert (await _call(app, "GET", "/hooks/jnt")).status_code == 405
        assert routed == ["/other/5", "/hooks/jnt"]
    finally:
        app.router.__class__.__call__ = real  # type: ignore[method-assign]


async def test_the_layer_sits_right_above_the_router() -> None:
    app = _app()
    serve_directly(app, [hook])
    layer: Any = app.build_middleware_stack()
    while not isinstance(layer, DirectRoutes):
        layer = layer.app
    assert layer.router is app.router


def test_only_endpoints_that_need_nothing_from_fastapi_qualify() -> None:
    bad = APIRouter()

    @bad.post("/q/{x}")
    async def with_query(x: str, request: Request, limit: int = 5) -> Any:
        return JSONResponse({})

    @bad.post("/d/{x}")
    async def with_dependency(x: str, request: Request, d: str = Depends(lambda: "d")) -> Any:
        return JSONResponse({})

    @bad.post("/i/{x}")
    async def with_int_path(x: int, request: Request) -> Any:
        return JSONResponse({})

    app = _app()
    app.include_router(bad)
    for endpoint in (with_query, with_dependency, with_int_path):
        with pytest.raises(TypeError):
            serve_directly(app, [endpoint])
    with pytest.raises(ValueError):  # not a route of this app
        serve_directly(FastAPI(), [hook])
    prefixed = FastAPI()
    prefixed.include_router(router, prefix="/v1")  # its own path is not the app's
    with pytest.raises(TypeError):
        serve_directly(prefixed, [hook])


def test_courier_serves_its_partner_webhooks_directly() -> None:
    from services.courier import webhooks
    from services.courier.app import build

    app = build()
    layer: Any = app.build_middleware_stack()
    while not isinstance(layer, DirectRoutes):
        layer = layer.app
    assert [route.endpoint for route in layer.routes] == [webhooks.partner_webhook]
