"""HTTP plumbing every service's API uses: problem+json errors, request context, health."""

from __future__ import annotations

import uuid
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from shared.logging import get_logger

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
    ) -> None:
        super().__init__(title)
        self.status = status
        self.title = title
        self.detail = detail
        self.errors = errors or []
        self.headers = headers


def problem_response(
    status: int,
    title: str,
    detail: str = "",
    errors: list[dict[str, str]] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status}
    if detail:
        body["detail"] = detail
    if errors:
        body["errors"] = errors
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def _field(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or "body"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def _problem(_: Request, exc: Problem) -> JSONResponse:
        return problem_response(exc.status, exc.title, exc.detail, exc.errors, exc.headers)

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
            errors.append({"field": _field(tuple(err["loc"])), "message": err["msg"]})
        return problem_response(
            422, "Data tidak valid / Invalid data", "Periksa kolom berikut / Check these fields", errors
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return problem_response(exc.status_code, str(exc.detail), headers=exc.headers)

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

        with structlog.contextvars.bound_contextvars(http_request_id=request_id):
            await self.app(scope, receive, send_with_id)


def request_id_of(request: Request) -> str:
    return str(getattr(request.state, "request_id", "")) or str(uuid.uuid4())
