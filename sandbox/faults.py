"""Outage simulation: a partner API that answers 503, hangs, or refuses, for a while.

``timeout`` mode holds each request until the fault ends and then serves it normally: that is the
nasty real case where the caller has timed out but the partner did book the shipment, which only the
partner's dedupe on our order reference makes safe to retry. ``refuse`` answers like the partner
refusing on business grounds (J&T: HTTP 200 with an error code; Pos: 400), which no retry fixes.
"""

from __future__ import annotations

import asyncio
from typing import Any

from sandbox.responses import JSONResponse
from sandbox.world import World

_POLL_S = 0.05

_UNAVAILABLE: dict[str, dict[str, Any]] = {
    "jnt": {"code": "503", "msg": "Service Unavailable", "data": None},
    "pos": {"error": "service_unavailable", "message": "Layanan sedang tidak tersedia"},
    "whatsapp": {
        "error": {
            "message": "(#2) Service temporarily unavailable",
            "type": "OAuthException",
            "code": 2,
            "fbtrace_id": "sandbox-fault",
        }
    },
}


_REFUSED: dict[str, tuple[int, dict[str, Any]]] = {
    "jnt": (200, {"code": "145003001", "msg": "sandbox: order refused", "data": None}),
    "pos": (400, {"error": "invalid_request", "message": "sandbox: order refused"}),
    "whatsapp": (400, {"error": {"message": "(#100) Invalid parameter", "type": "OAuthException",
                                 "code": 100, "fbtrace_id": "sandbox-fault"}}),
}


async def gate(world: World, target: str) -> JSONResponse | None:
    """None to go on serving; otherwise the response the outage gives."""
    while world.state.fault(target) == "timeout":
        await asyncio.sleep(_POLL_S)
    if world.state.fault(target) == "error":
        return JSONResponse(_UNAVAILABLE[target], status_code=503)
    if world.state.fault(target) == "refuse":
        status, body = _REFUSED[target]
        return JSONResponse(body, status_code=status)
    return None
