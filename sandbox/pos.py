"""Pos Indonesia, as the sandbox plays it: OAuth2 client credentials, order posting, cancel."""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import time
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Request

from sandbox.faults import gate
from sandbox.responses import JSONResponse
from sandbox.world import World

router = APIRouter(prefix="/pos", tags=["Pos Indonesia"])

_RECEIVER_FIELDS = (
    "receivername",
    "receiverphone",
    "receiveraddress",
    "receivercity",
    "receiverzipcode",
)


def _error(
    status: int, error: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"error": error, "message": message}, status_code=status, headers=headers)


def _client_credentials(request: Request, form: dict[str, list[str]]) -> tuple[str, str]:
    """HTTP Basic (RFC 6749's preferred way) or client_id/client_secret in the form."""
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("basic "):
        try:
            user, _, password = base64.b64decode(auth[6:]).decode().partition(":")
            return user, password
        except (binascii.Error, UnicodeDecodeError):
            return "", ""
    return form.get("client_id", [""])[0], form.get("client_secret", [""])[0]


@router.post("/oauth2/token")
async def token(request: Request) -> JSONResponse:
    world: World = request.app.state.world
    if (outage := await gate(world, "pos")) is not None:
        return outage
    try:
        form = parse_qs((await request.body()).decode(), keep_blank_values=True)
    except UnicodeDecodeError:
        form = {}
    if form.get("grant_type", [""])[0] != "client_credentials":
        return _error(400, "unsupported_grant_type", "grant_type must be client_credentials")
    client_id, secret = _client_credentials(request, form)
    settings = world.settings
    id_ok = hmac.compare_digest(client_id.encode(), settings.pos_client_id.encode())
    secret_ok = hmac.compare_digest(secret.encode(), settings.pos_client_secret.encode())
    if not (id_ok and secret_ok):
        challenge = {"WWW-Authenticate": 'Basic realm="pos"'}
        return _error(401, "invalid_client", "client authentication failed", challenge)
    access_token = world.state.token()
    ttl = settings.pos_token_ttl_s
    world.state.pos_tokens[access_token] = time.monotonic() + ttl
    return JSONResponse({"access_token": access_token, "token_type": "Bearer", "expires_in": ttl})


def _unauthorized(request: Request, world: World) -> JSONResponse | None:
    auth = request.headers.get("authorization", "")
    scheme, _, presented = auth.partition(" ")
    expires = world.state.pos_tokens.get(presented.strip()) if scheme.lower() == "bearer" else None
    if expires is None or time.monotonic() >= expires:
        challenge = {"WWW-Authenticate": 'Bearer error="invalid_token"'}
        return _error(401, "invalid_token", "access token missing, unknown or expired", challenge)
    return None


def _order_problem(body: Any) -> str | None:
    if not isinstance(body, dict):
        return "body must be a JSON object"
    if not isinstance(body.get("orderid"), str) or not body["orderid"]:
        return "orderid is required"
    for key in _RECEIVER_FIELDS:
        if not isinstance(body.get(key), str) or not body[key].strip():
            return f"{key} is required"
    if body.get("cod") is not True:
        return "cod must be true: every Ketanmu shipment is cash on delivery"
    value = body.get("codvalue")
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        return "codvalue must be a positive integer number of rupiah"
    return None


@router.post("/api/v1/orders")
async def create_order(request: Request) -> JSONResponse:
    world: World = request.app.state.world
    if (outage := await gate(world, "pos")) is not None:
        return outage
    if (refusal := _unauthorized(request, world)) is not None:
        return refusal
    try:
        body = json.loads(await request.body())
    except ValueError:
        return _error(400, "invalid_request", "body is not JSON")
    if (problem := _order_problem(body)) is not None:
        return _error(400, "invalid_request", problem)
    shipment, created = world.book(
        "pos", body["orderid"], body["codvalue"], body["receivername"], body
    )
    return JSONResponse(
        {"awb": shipment.waybill, "orderid": shipment.order_ref, "status": shipment.status},
        status_code=201 if created else 200,
    )


@router.post("/api/v1/orders/{awb}/cancel")
async def cancel_order(awb: str, request: Request) -> JSONResponse:
    world: World = request.app.state.world
    if (outage := await gate(world, "pos")) is not None:
        return outage
    if (refusal := _unauthorized(request, world)) is not None:
        return refusal
    shipment = world.state.shipments.get(awb)
    if shipment is None or shipment.partner != "pos":
        return _error(404, "not_found", "no order with this awb")
    if shipment.status not in ("booked", "cancelled"):
        return _error(409, "conflict", "already picked up, cannot be cancelled")
    shipment.status = "cancelled"
    return JSONResponse({"awb": awb, "status": "cancelled"})
