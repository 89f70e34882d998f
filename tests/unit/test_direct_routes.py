"""shared/http.py serve_directly: hot endpoints past FastAPI's routing, inside every middleware."""

from __future__ import annotations

import json
import uuid
from typing import Annotated, Any, Literal

import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI, Header, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

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

    @bad.post("/i/{x:int}")
    async def with_int_convertor(x: int, request: Request) -> Any:
        return JSONResponse({})

    @bad.post("/b/{x}")
    async def with_two_bodies(x: str, request: Request, a: Thing, b: Thing) -> Any:
        return JSONResponse({})

    async def needs_more(request: Request, q: int = 1) -> None:
        pass

    @bad.post("/r/{x}", dependencies=[Depends(needs_more)])
    async def with_a_dependency_of_a_query(x: str, request: Request) -> Any:
        return JSONResponse({})

    @bad.post("/m/{x}", max_body_size=1024)
    async def with_its_own_body_limit(x: str, request: Request) -> Any:
        return JSONResponse({})

    app = _app()
    app.include_router(bad)
    for endpoint in (with_query, with_dependency, with_int_convertor, with_two_bodies,
                     with_a_dependency_of_a_query, with_its_own_body_limit):
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
    assert [route.endpoint for route, _ in layer.routes] == [webhooks.partner_webhook]


# --- parameters, a body and a route dependency: answered exactly as through FastAPI --------------


class Place(BaseModel):
    model_config = ConfigDict(extra="forbid")
    city: str = Field(min_length=2)
    postal_code: str = Field(pattern=r"^[0-9]{5}$")


class Thing(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    name: str = Field(min_length=1, max_length=10)
    count: int = Field(default=1, ge=1)
    kind: Literal["kk", "ktp_el"]
    place: Place

    @field_validator("name")
    @classmethod
    def _not_admin(cls, value: str) -> str:
        if value == "admin":
            raise ValueError("nama ini tidak boleh / this name is not allowed")
        return value


async def refuse_when_asked(request: Request) -> None:
    if request.headers.get("x-shed") == "yes":
        raise Problem(429, "Sedang sibuk / Busy", headers={"Retry-After": "7"})


typed = APIRouter()


@typed.post("/things/{thing_id}", status_code=201, dependencies=[Depends(refuse_when_asked)])
async def put_thing(
    thing_id: uuid.UUID, body: Thing, request: Request,
    idempotency_key: Annotated[str | None, Header()] = None,
) -> Any:
    return JSONResponse({"id": str(thing_id), "thing": body.model_dump(), "key": idempotency_key},
                        status_code=201)


def _typed_app(direct: bool) -> FastAPI:
    app = _app()
    app.include_router(typed)
    if direct:
        serve_directly(app, [put_thing])
    return app


THING = {"name": " Sri ", "kind": "kk", "place": {"city": "Sooko", "postal_code": "61361"}}
ID = "0b9c3f5e-8f8e-4a57-9d0c-0a2b7f3c1d10"
CASES: list[tuple[str, dict[str, Any]]] = [
    ("valid", {"json": THING}),
    ("valid with the header", {"json": THING, "headers": {"idempotency-key": "k-1"}}),
    ("no body", {}),
    ("empty object", {"json": {}}),
    ("a list", {"json": [THING]}),
    ("wrong types", {"json": {**THING, "count": "many", "kind": 5, "place": "Sooko"}}),
    ("nested errors", {"json": {**THING, "place": {"city": "S", "postal_code": "6136"}}}),
    ("an unknown field", {"json": {**THING, "nik": "3516010101900001"}}),
    ("a validator's refusal", {"json": {**THING, "name": "admin"}}),
    ("null", {"content": b"null", "headers": {"content-type": "application/json"}}),
    ("malformed JSON", {"content": b'{"name": ', "headers": {"content-type": "application/json"}}),
    ("not JSON", {"content": b"name=Sri", "headers": {"content-type": "text/plain"}}),
    ("JSON without a content type", {"content": json.dumps(THING).encode()}),
    ("+json", {"content": json.dumps(THING).encode(),
               "headers": {"content-type": "application/vnd.ketanmu+json"}}),
    ("shed before validation", {"json": {"bad": True}, "headers": {"x-shed": "yes"}}),
]


@pytest.mark.parametrize(("case", "kw"), CASES, ids=[c for c, _ in CASES])
@pytest.mark.parametrize("path_id", [ID, "not-a-uuid"])
async def test_a_direct_endpoint_answers_exactly_as_fastapi(
    case: str, kw: dict[str, Any], path_id: str
) -> None:
    via_fastapi = await _call(_typed_app(direct=False), "POST", f"/things/{path_id}", **kw)
    direct = await _call(_typed_app(direct=True), "POST", f"/things/{path_id}", **kw)
    assert (direct.status_code, direct.headers.get("content-type"), direct.content) == (
        via_fastapi.status_code, via_fastapi.headers.get("content-type"), via_fastapi.content)
    assert direct.headers.get("retry-after") == via_fastapi.headers.get("retry-after")
    if case.startswith("valid") and path_id == ID:
        assert direct.status_code == 201 and direct.json()["thing"]["name"] == "Sri"


async def test_the_intake_registration_and_printing_answer_invalid_bodies_as_fastapi(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The services' own hot endpoints, with bodies they refuse before any database: the direct
    path's 422s are FastAPI's, byte for byte."""
    import shared.runtime
    from services.intake.app import build as intake
    from services.printing.app import build as printing

    bodies: list[Any] = [{}, [], {"applicant": {"nik": "123"}}, {"document_type": "passport"},
                         {"document_number": "", "operator": "x" * 200}, {"unknown": 1}]
    for build, paths in ((intake, ["/requests"]),
                         (printing, [f"/print-jobs/{ID}/printed", "/print-jobs/nope/printed",
                                     "/print-jobs/claim-next"])):
        direct_app = build()
        with monkeypatch.context() as m:
            m.setattr(shared.runtime, "serve_directly", lambda *_: None)
            routed_app = build()
        for path in paths:
            for body in bodies:
                a = await _call(direct_app, "POST", path, json=body)
                b = await _call(routed_app, "POST", path, json=body)
                assert (a.status_code, a.content) == (b.status_code, b.content), (path, body)
                assert a.status_code in (400, 422), (path, body, a.text)


async def test_while_a_dependency_is_overridden_fastapi_serves_the_request() -> None:
    """Tests override dependencies (``app.dependency_overrides``); the direct path would not
    see them, so FastAPI answers while any is set."""
    app = _typed_app(direct=True)
    shed = await _call(app, "POST", f"/things/{ID}", json=THING, headers={"x-shed": "yes"})
    assert shed.status_code == 429

    async def never_shed(request: Request) -> None:
        pass

    app.dependency_overrides[refuse_when_asked] = never_shed
    taken = await _call(app, "POST", f"/things/{ID}", json=THING, headers={"x-shed": "yes"})
    assert taken.status_code == 201


def test_the_services_serve_their_hot_endpoints_directly() -> None:
    from services.intake import api as intake_api
    from services.intake.app import build as intake
    from services.printing import api as printing_api
    from services.printing.app import build as printing

    for build, expected in ((intake, [intake_api.register_request]),
                            (printing, [printing_api.mark_printed, printing_api.claim_next])):
        layer: Any = build().build_middleware_stack()
        while not isinstance(layer, DirectRoutes):
            layer = layer.app
        assert sorted(r.endpoint.__name__ for r, _ in layer.routes) == sorted(
            e.__name__ for e in expected)
