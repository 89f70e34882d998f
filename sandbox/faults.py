"""Outage simulation: a partner API that answers 503, or hangs, for a while.

``timeout`` mode holds each request until the fault ends and then serves it normally: that is the
nasty real case where the caller has timed out but the partner did book the shipment, which only the
partner's dedupe on our order reference makes safe to retry.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi.responses import JSONResponse

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


async def gate(world: World, target: str) -> JSONResponse | None:
    """None to go on serving; otherwise the response the outage gives."""
    while world.state.fault(target) == "timeout":
        await asyncio.sleep(_POLL_S)
    if world.state.fault(target) == "error":
        return JSONResponse(_UNAVAILABLE[target], status_code=503)
    return None
