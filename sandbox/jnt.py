"""J&T Express Open Platform, as the sandbox plays it: addOrder and cancelOrder.

Like J&T, errors are HTTP 200 with a code other than "1". The codes are the sandbox's own
(J&T publishes its list only to contracted customers); see README.md.
"""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Request

from sandbox.callbacks import format_jnt_time
from sandbox.faults import gate
from sandbox.responses import JSONResponse
from sandbox.world import World
from shared.webhook_signing import verify_jnt_digest

router = APIRouter(prefix="/jnt/api/order", tags=["J&T Express"])

CODE_MISSING = "145003001"
CODE_BAD_ACCOUNT = "145003050"
CODE_BAD_CUSTOMER = "145003051"
CODE_BAD_DIGEST = "145003052"
CODE_STALE = "145003053"
CODE_BAD_COD = "145003060"
CODE_NOT_FOUND = "145003070"
CODE_NOT_CANCELLABLE = "145003071"
_WINDOW_MS = 5 * 60 * 1000
_RECEIVER_FIELDS = ("name", "mobile", "prov", "city", "area", "address")


def _refuse(code: str, msg: str) -> JSONResponse:
    return JSONResponse({"code": code, "msg": msg, "data": None})


def _success(data: dict[str, Any]) -> JSONResponse:
    return JSONResponse({"code": "1", "msg": "success", "data": data})


async def _authenticate(request: Request, world: World) -> dict[str, Any] | JSONResponse:
    """The decoded bizContent when the call is J&T-authentic; otherwise the refusal."""
    settings = world.settings
    if request.headers.get("apiAccount") != settings.jnt_api_account:
        return _refuse(CODE_BAD_ACCOUNT, "Illegal apiAccount")
    try:
        form = parse_qs((await request.body()).decode(), keep_blank_values=True)
    except UnicodeDecodeError:
        form = {}
    if len(form.get("bizContent", [])) != 1:
        return _refuse(CODE_MISSING, "bizContent is required")
    biz = form["bizContent"][0]
    if not verify_jnt_digest(biz, settings.jnt_private_key, request.headers.get("digest")):
        return _refuse(CODE_BAD_DIGEST, "digest is invalid")
    try:
        sent_ms = int(request.headers.get("timestamp", ""))
    except ValueError:
        return _refuse(CODE_MISSING, "timestamp is required")
    if abs(time.time() * 1000 - sent_ms) > _WINDOW_MS:
        return _refuse(CODE_STALE, "timestamp expired")
    try:
        content = json.loads(biz)
    except ValueError:
        return _refuse(CODE_MISSING, "bizContent is not valid JSON")
    if not isinstance(content, dict):
        return _refuse(CODE_MISSING, "bizContent is not a JSON object")
    return content


def _cod_value(content: dict[str, Any]) -> int | None:
    info = content.get("codInfo")
    raw = info.get("codValue") if isinstance(info, dict) else None
    if isinstance(raw, str) and raw.isdigit() and int(raw) > 0:
        return int(raw)
    return None


@router.post("/addOrder")
async def add_order(request: Request) -> JSONResponse:
    world: World = request.app.state.world
    if (outage := await gate(world, "jnt")) is not None:
        return outage
    content = await _authenticate(request, world)
    if isinstance(content, JSONResponse):
        return content
    order_ref, customer = content.get("txlogisticId"), content.get("customerCode")
    if not isinstance(order_ref, str) or not order_ref:
        return _refuse(CODE_MISSING, "txlogisticId is required")
    if customer != world.settings.jnt_customer_code:
        return _refuse(CODE_BAD_CUSTOMER, "customerCode does not belong to this apiAccount")
    receiver = content.get("receiver")
    if not isinstance(receiver, dict):
        return _refuse(CODE_MISSING, "receiver is required")
    for key in _RECEIVER_FIELDS:
        if not isinstance(receiver.get(key), str) or not receiver[key].strip():
            return _refuse(CODE_MISSING, f"receiver.{key} is required")
    cod = _cod_value(content)
    if cod is None:
        return _refuse(CODE_BAD_COD, "codInfo.codValue must be a positive whole number")
    shipment, _ = world.book("jnt", order_ref, cod, receiver["name"], content)
    return _success(
        {
            "billCode": shipment.waybill,
            "txlogisticId": order_ref,
            "sortingCode": "SBX-01",
            "createOrderTime": format_jnt_time(shipment.booked_at),
        }
    )


@router.post("/cancelOrder")
async def cancel_order(request: Request) -> JSONResponse:
    world: World = request.app.state.world
    if (outage := await gate(world, "jnt")) is not None:
        return outage
    content = await _authenticate(request, world)
    if isinstance(content, JSONResponse):
        return content
    waybill = content.get("billCode")
    if not waybill and isinstance(content.get("txlogisticId"), str):
        waybill = world.state.orders.get(("jnt", content["txlogisticId"]))
    shipment = world.state.shipments.get(waybill) if isinstance(waybill, str) else None
    if shipment is None or shipment.partner != "jnt":
        return _refuse(CODE_NOT_FOUND, "order not found")
    if shipment.status not in ("booked", "cancelled"):
        return _refuse(CODE_NOT_CANCELLABLE, "order already picked up, cannot be cancelled")
    shipment.status = "cancelled"
    return _success({"billCode": shipment.waybill, "txlogisticId": shipment.order_ref})
