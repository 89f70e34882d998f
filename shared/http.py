"""HTTP plumbing every service's API uses: problem+json errors, request context, body guard, and
the hot endpoints served past FastAPI's routing and request handling (``serve_directly``).

Every error answer is ``application/problem+json`` (RFC 9457) with a title in Bahasa Indonesia and
English, and for invalid fields an ``errors`` list naming each field and why.
"""

from __future__ import annotations

import email.message
import inspect
import json
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import structlog
from fastapi import FastAPI, Request, params
from fastapi.datastructures import DefaultPlaceholder
from fastapi.dependencies.utils import request_body_to_args, request_params_to_args
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic_core import PydanticUndefined as Undefined
from starlette._utils import get_route_path
from starlette.convertors import StringConvertor
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from shared.logging import get_logger
from shared.privacy import mask_text

log = get_logger(__name__)

PROBLEM_JSON = "application/problem+json"


class Problem(Exception):
    """An error answer a person can act on (RFC 9457 problem details)."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str = "",
        errors: list[dict[str, str]] | None = None,
        headers: dict[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(title)
        self.status = status
        self.title = title
        self.detail = detail
        self.errors = errors or []
        self.headers = headers
        # RFC 9457 extension members, e.g. {"code": "daily_quota_full", "next_available_date": ...}
        self.extra = dict(extra or {})


def problem_response(
    status: int,
    title: str,
    detail: str = "",
    errors: list[dict[str, str]] | None = None,
    headers: dict[str, str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status}
    if detail:
        body["detail"] = detail
    if errors:
        body["errors"] = errors
    for key, value in (extra or {}).items():
        body.setdefault(key, value)
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


# Titles of the errors the framework raises itself (unknown path, wrong method...), bilingual.
HTTP_TITLES: dict[int, str] = {
    400: "Permintaan tidak sah / Bad request",
    401: "Perlu autentikasi / Authentication required",
    403: "Tidak diizinkan / Forbidden",
    404: "Tidak ditemukan / Not found",
    405: "Metode tidak diizinkan / Method not allowed",
    406: "Format jawaban tidak tersedia / Not acceptable",
    413: "Data terlalu besar / Body too large",
    415: "Jenis konten tidak didukung / Unsupported content type",
}

# Pydantic error types -> "Bahasa Indonesia / English", {ctx} filled from the error's context.
_FIELD_MESSAGES: dict[str, str] = {
    "missing": "wajib diisi / required",
    "extra_forbidden": "kolom tidak dikenal / unknown field",
    "string_type": "harus berupa teks / must be a string",
    "string_too_short": "terlalu pendek (minimal {min_length} karakter)"
    " / too short (at least {min_length} characters)",
    "string_too_long": "terlalu panjang (maksimal {max_length} karakter)"
    " / too long (at most {max_length} characters)",
    "too_short": "terlalu pendek (minimal {min_length}) / too short (at least {min_length})",
    "too_long": "terlalu panjang (maksimal {max_length}) / too long (at most {max_length})",
    "string_pattern_mismatch": "format tidak sah / wrong format",
    "literal_error": "harus salah satu dari {expected} / must be one of {expected}",
    "enum": "harus salah satu dari {expected} / must be one of {expected}",
    "dict_type": "harus berupa objek JSON / must be a JSON object",
    "model_type": "harus berupa objek JSON / must be a JSON object",
    "model_attributes_type": "harus berupa objek JSON / must be a JSON object",
    "list_type": "harus berupa daftar / must be a list",
    "uuid_parsing": "bukan UUID yang sah / not a valid UUID",
    "uuid_type": "bukan UUID yang sah / not a valid UUID",
    "int_parsing": "harus bilangan bulat / must be an integer",
    "int_type": "harus bilangan bulat / must be an integer",
    "int_from_float": "harus bilangan bulat / must be an integer",
    "bool_parsing": "harus true atau false / must be true or false",
    "bool_type": "harus true atau false / must be true or false",
    "date_parsing": "tanggal harus berformat YYYY-MM-DD / date must be YYYY-MM-DD",
    "date_from_datetime_parsing": "tanggal harus berformat YYYY-MM-DD / date must be YYYY-MM-DD",
    "date_type": "tanggal harus berformat YYYY-MM-DD / date must be YYYY-MM-DD",
    "greater_than_equal": "minimal {ge} / must be at least {ge}",
    "less_than_equal": "maksimal {le} / must be at most {le}",
}


def field_message(err: Mapping[str, Any]) -> str:
    """One pydantic error as a bilingual message; never echoes the rejected input."""
    kind = str(err.get("type", ""))
    ctx = err.get("ctx") or {}
    if kind in ("value_error", "assertion_error"):
        # our own validators raise bilingual messages ("... / ..."); pydantic prefixes them
        text = str(ctx.get("error", "")) or str(err.get("msg", ""))
        return text.removeprefix("Value error, ").removeprefix("Assertion failed, ")
    template = _FIELD_MESSAGES.get(kind)
    if template is None:
        return f"tidak valid / {err.get('msg', 'invalid')}"
    try:
        # pydantic lists choices as "'a', 'b' or 'c'": the "or" would be English in both halves
        return template.format(**{k: str(v).replace(" or ", ", ") for k, v in ctx.items()})
    except (KeyError, IndexError):
        return template.split("{")[0].strip() or kind


def _field(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    # a field name is the caller's own text (an unknown key): masked like any other answer
    return mask_text(".".join(parts)[:200]) or "body"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def _problem(_: Request, exc: Problem) -> JSONResponse:
        return problem_response(
            exc.status, exc.title, exc.detail, exc.errors, exc.headers, getattr(exc, "extra", None)
        )

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = []
        for err in exc.errors():
            if err.get("type") == "json_invalid":
                return problem_response(
                    400,
                    "Body bukan JSON yang sah / Body is not valid JSON",
                    str(err.get("ctx", {}).get("error", "")),
                )
            errors.append(
                {
                    "field": _field(tuple(err["loc"])),
                    "message": field_message(err),
                    "code": str(err.get("type", "")),
                }
            )
        return problem_response(
            422, "Data tidak valid / Invalid data", "Periksa kolom berikut / Check these fields", errors
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        title = str(exc.detail)
        if exc.status_code in HTTP_TITLES and title in ("", _reason_phrase(exc.status_code)):
            title = HTTP_TITLES[exc.status_code]
        elif exc.status_code == 400 and title == "There was an error parsing the body":
            title = "Body bukan JSON yang sah / Body is not valid JSON"
        return problem_response(exc.status_code, title, headers=exc.headers)

    @app.exception_handler(Exception)
    async def _crash(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return problem_response(500, "Kesalahan server / Internal error")


class RequestContextMiddleware:
    """Binds ``http_request_id`` (from ``X-Request-ID`` or new) to every log line of a request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = ""
        for name, value in scope.get("headers", []):
            if name == b"x-request-id":
                request_id = value.decode("latin-1")[:100]
                break
        request_id = request_id or str(uuid.uuid4())
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_id(message: Any) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", []).append((b"x-request-id", request_id.encode()))
            await send(message)

        # bind + reset rather than ``bound_contextvars``, which also copies the whole context to
        # save and restore what was bound before (~4 us a request; nothing else binds this key)
        tokens = structlog.contextvars.bind_contextvars(http_request_id=request_id)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            structlog.contextvars.reset_contextvars(**tokens)


def _reason_phrase(status: int) -> str:
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


class _BodyRefused(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            # two parsers may each keep a different one: refuse rather than guess
            raise _BodyRefused(400, f"kunci ganda / duplicate key {mask_text(json.dumps(key)[:60])}")
        seen[key] = value
    return seen


def _no_constant(name: str) -> Any:
    raise _BodyRefused(400, f"{name} bukan JSON / {name} is not JSON (RFC 8259)")


def _depth(value: Any, limit: int) -> int:
    stack: list[tuple[Any, int]] = [(value, 1)]
    deepest = 0
    while stack:
        item, level = stack.pop()
        deepest = max(deepest, level)
        if level > limit:
            return level
        if isinstance(item, dict):
            stack.extend((v, level + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, level + 1) for v in item)
    return deepest


def is_json_media_type(content_type: str) -> bool:
    media, _, params = content_type.partition(";")
    media = media.strip().lower()
    main, _, sub = media.partition("/")
    if main != "application" or not (sub == "json" or sub.endswith("+json")):
        return False
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() not in (
            "utf-8",
            "utf8",
        ):
            return False
    return True


class JsonBodyGuard:
    """Refuses, before any route runs, a body a JSON API cannot take.

    For POST, PUT and PATCH with a non-empty body: larger than ``max_bytes`` -> 413 (judged on
    Content-Length before reading, and while reading a chunked body); not ``application/json``
    (or ``+json``, UTF-8) -> 415; not UTF-8, not JSON, NaN/Infinity, duplicate keys, or nested
    deeper than ``max_depth`` -> 400. The body is then replayed byte for byte to the app, so a
    route can still verify a signature over the raw body.
    """

    def __init__(self, app: ASGIApp, max_bytes: int = 65_536, max_depth: int = 32) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_depth = max_depth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        try:
            body = await self._read(headers, receive)
            if body:
                self._check(headers.get("content-type", ""), body)
        except _BodyRefused as refused:
            title = HTTP_TITLES.get(refused.status, "Body tidak sah / Invalid body")
            if refused.status == 400:
                title = "Body bukan JSON yang sah / Body is not valid JSON"
            response = problem_response(refused.status, title, refused.detail)
            await response(scope, receive, send)
            return

        sent = False

        async def replay() -> Any:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _read(self, headers: Mapping[str, str], receive: Receive) -> bytes:
        too_big = _BodyRefused(
            413, f"maksimal {self.max_bytes} byte / at most {self.max_bytes} bytes"
        )
        declared = headers.get("content-length")
        if declared is not None:
            if not declared.strip().isdigit():
                raise _BodyRefused(400, "Content-Length tidak sah / invalid Content-Length")
            if int(declared) > self.max_bytes:
                raise too_big
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                raise too_big
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)

    def _check(self, content_type: str, body: bytes) -> None:
        if not is_json_media_type(content_type):
            raise _BodyRefused(
                415,
                "kirim data sebagai application/json (UTF-8)"
                " / send the body as application/json (UTF-8)",
            )
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise _BodyRefused(400, "bukan teks UTF-8 / not UTF-8 text") from None
        try:
            value = json.loads(
                text, object_pairs_hook=_no_duplicate_keys, parse_constant=_no_constant
            )
        except json.JSONDecodeError as exc:
            raise _BodyRefused(
                400, f"JSON rusak di posisi {exc.pos} / malformed JSON at position {exc.pos}"
            ) from None
        except RecursionError:
            raise _BodyRefused(400, "JSON terlalu dalam / JSON nested too deep") from None
        if _depth(value, self.max_depth) > self.max_depth:
            raise _BodyRefused(
                400, f"JSON terlalu dalam (maks. {self.max_depth}) / nested deeper than {self.max_depth}"
            )


def request_id_of(request: Request) -> str:
    return str(getattr(request.state, "request_id", "")) or str(uuid.uuid4())


# --- endpoints served past FastAPI's router, parameters solved by FastAPI's own functions -------

DirectEndpoint = Callable[..., Awaitable[Response]]


class _DirectRoute:
    """One endpoint served by :class:`DirectRoutes`: its parameters solved as FastAPI solves them,
    with FastAPI's own functions (``request_params_to_args``, ``request_body_to_args``), in
    FastAPI's order: the body read and parsed, the route's dependencies (``request`` only), then
    the path, header and body parameters validated, every error in one 422."""

    __slots__ = ("body_fields", "checks", "dependant", "embed_body", "endpoint", "strict_json")

    def __init__(self, route: APIRoute) -> None:
        self.endpoint = route.endpoint
        self.dependant = route.dependant
        self.body_fields = route.dependant.body_params
        self.embed_body = bool(getattr(route, "_embed_body_fields", False))
        self.strict_json = True  # FastAPI's default; serve_directly refuses any other
        self.checks = [sub.call for sub in route.dependant.dependencies]

    async def __call__(self, request: Request, raw_path_params: dict[str, str]) -> Response:
        d = self.dependant
        body: Any = Undefined
        if self.body_fields:
            body = await _received_body(request, self.strict_json)
        for check in self.checks:  # e.g. intake's load shedding: before any validation
            await check(request)
        values, errors = request_params_to_args(d.path_params, raw_path_params)
        if d.header_params:
            found, more = request_params_to_args(d.header_params, request.headers)
            values.update(found)
            errors.extend(more)
        if self.body_fields:
            found, more = await request_body_to_args(self.body_fields, body, self.embed_body)
            values.update(found)
            errors.extend(more)
        if errors:
            raise RequestValidationError(errors, body=None if body is Undefined else body)
        response = await self.endpoint(request=request, **values)
        if not isinstance(response, Response):
            raise TypeError(f"{d.path}: a direct endpoint must return a Response")
        return response


async def _received_body(request: Request, strict_json: bool) -> Any:
    """The body as FastAPI 0.165's request handler gives it to the body parameter: parsed JSON
    when the content type says JSON (or there is none and the route is not strict), else the
    bytes; ``Undefined`` when empty. Malformed JSON is FastAPI's ``json_invalid`` 422."""
    try:
        raw = await request.body()
        if not raw:
            return Undefined
        content_type = request.headers.get("content-type")
        is_json = not strict_json if not content_type else False
        if content_type:
            message = email.message.Message()
            message["content-type"] = content_type
            if message.get_content_maintype() == "application":
                subtype = message.get_content_subtype()
                is_json = subtype == "json" or subtype.endswith("+json")
        return await request.json() if is_json else raw
    except json.JSONDecodeError as exc:
        raise RequestValidationError(
            [{"type": "json_invalid", "loc": ("body", exc.pos), "msg": "JSON decode error",
              "input": {}, "ctx": {"error": exc.msg}}],
            body=exc.doc,
        ) from exc
    except StarletteHTTPException:
        raise
    except Exception as exc:  # a client gone mid-body, say: FastAPI's quiet 400
        raise StarletteHTTPException(400, "There was an error parsing the body") from exc


class DirectRoutes:
    """The innermost layer of a FastAPI app (inside every middleware and exception handler): a
    request for one of ``routes`` goes straight to its endpoint; any other to the app's router.

    For the few endpoints every lifecycle calls (courier's partner webhooks: three per lifecycle;
    intake's registration; printing's claim of a stack and its print) FastAPI's routing and
    request handling cost more CPU than the endpoint: FastAPI 0.165 matches the request against
    every route of the included routers in turn, twice, then solves the parameters through a
    stack of exit stacks and wrappers. A micro-benchmark with a dozen routes (``bench/README.md``,
    fourteenth round): ~320 us of server CPU per request through FastAPI, ~110 us with the
    endpoint reached directly, on the benchmark machine. The parameters are solved here by
    FastAPI's own functions, so a direct endpoint answers exactly as through FastAPI, its 422s
    included (``tests/unit/test_direct_routes.py`` compares the two); what qualifies is checked by
    :func:`serve_directly`. Its route stays in the app for the docs and for every other method
    (405).
    """

    def __init__(
        self, router: ASGIApp, routes: list[APIRoute], overrides: Mapping[Any, Any] | None = None
    ) -> None:
        self.router = router
        self.routes = [(route, _DirectRoute(route)) for route in routes]
        # the app's dependency_overrides (tests): while any is set, FastAPI serves every request
        self.overrides = overrides if overrides is not None else {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not self.overrides:
            path = get_route_path(scope)
            for route, direct in self.routes:
                found = route.path_regex.match(path)
                if found is not None and scope["method"] in route.methods:
                    params = found.groupdict()
                    scope["path_params"] = params
                    scope["endpoint"] = route.endpoint
                    scope["route"] = route
                    response = await direct(Request(scope, receive, send), params)
                    await response(scope, receive, send)
                    return
        await self.router(scope, receive, send)


def serve_directly(app: FastAPI, endpoints: Sequence[DirectEndpoint]) -> None:
    """Serve ``endpoints`` (route functions already in ``app``) through :class:`DirectRoutes`.

    An endpoint qualifies if it takes ``request``, path parameters (plain ``{name}`` in the path,
    any type FastAPI validates), header parameters and at most one JSON body parameter, has only
    route dependencies that are coroutines of ``request`` alone, and returns a Response; anything
    else (query or cookie parameters, forms, parameter dependencies, ``Response`` or background
    tasks parameters) is a TypeError here, so an endpoint cannot silently lose a FastAPI feature.
    Call before the app's first request (its middleware stack is built then)."""
    found = [(route, plain) for route, plain in _api_routes(app.router.routes)
             if route.endpoint in endpoints]
    if len({route.endpoint for route, _ in found}) != len(endpoints):
        raise ValueError("serve_directly: an endpoint is not a route of this app")
    routes = [route for route, _ in found]
    for route, plain in found:
        if not plain:
            raise TypeError(f"{route.path}: a direct endpoint's router must be included without "
                            "a prefix or dependencies")
        why = _why_not_direct(route) or _why_not_direct_in(app)
        if why:
            raise TypeError(f"{route.path}: not servable directly: {why}")
    if app.middleware_stack is not None:
        raise RuntimeError("serve_directly: the app has already served a request")
    build = app.build_middleware_stack

    def build_with_direct_routes() -> ASGIApp:
        stack = build()
        layer: Any = stack
        while getattr(layer, "app", None) is not app.router:
            layer = getattr(layer, "app", None)  # every middleware keeps the next one as .app
            if layer is None:
                raise RuntimeError("serve_directly: the router is not found under the middleware")
        layer.app = DirectRoutes(app.router, routes, app.dependency_overrides)
        return stack

    app.build_middleware_stack = build_with_direct_routes  # type: ignore[method-assign]


def _why_not_direct_in(app: FastAPI) -> str:
    if app.max_body_size is not None or app.router.max_body_size is not None:
        return "a max_body_size on the app (FastAPI's limit is not applied here)"
    strict = getattr(app.router, "strict_content_type", True)
    if getattr(strict, "value", strict) is not True:
        return "strict_content_type off for the app"
    return ""


def _why_not_direct(route: APIRoute) -> str:
    d = route.dependant
    if route.max_body_size is not None or not isinstance(route.strict_content_type,
                                                          DefaultPlaceholder):
        return "a max_body_size or strict_content_type of its own"
    if d.query_params or d.cookie_params:
        return "query or cookie parameters"
    if d.request_param_name != "request":
        return "it must take `request: Request`"
    if (d.websocket_param_name or d.http_connection_param_name or d.response_param_name
            or d.background_tasks_param_name or d.security_scopes_param_name):
        return "it takes a Response, background tasks, security scopes or a connection"
    if len(d.body_params) > 1 or any(isinstance(f.field_info, params.Form) for f in d.body_params):
        return "more than one body parameter, or a form"
    if any(c.__class__ is not StringConvertor for c in route.param_convertors.values()):
        return "a typed path convertor ({name:int}...): use a plain {name}"
    for sub in d.dependencies:
        takes_only_request = (
            sub.request_param_name is not None and not sub.dependencies
            and not (sub.path_params or sub.query_params or sub.header_params
                     or sub.cookie_params or sub.body_params)
            and sub.call is not None and inspect.iscoroutinefunction(sub.call)
            and sub.concurrency is None
            and set(inspect.signature(sub.call).parameters) == {sub.request_param_name}
        )
        if not takes_only_request or sub.name is not None:
            return "a dependency that is not a route dependency of `request` alone"
    names = {"request"} | {f.name for f in (*d.path_params, *d.header_params, *d.body_params)}
    if set(inspect.signature(route.endpoint).parameters) != names:
        return "parameters FastAPI would solve otherwise"
    return ""


def _api_routes(routes: Sequence[Any], plain: bool = True) -> list[tuple[APIRoute, bool]]:
    """The APIRoutes in ``routes``, those of included routers too (FastAPI 0.165 keeps an
    included router as one ``_IncludedRouter`` entry), each with whether it was included plainly:
    no prefix (its own path is the app's) and no dependencies added by the inclusion."""
    out: list[tuple[APIRoute, bool]] = []
    for route in routes:
        if isinstance(route, APIRoute):
            out.append((route, plain))
        else:
            inner = getattr(route, "original_router", None)
            if inner is not None:
                context = getattr(route, "include_context", None)
                alone = (context is not None and not getattr(context, "prefix", "x")
                         and not getattr(context, "dependencies", True))
                out.extend(_api_routes(inner.routes, plain and alone))
    return out
