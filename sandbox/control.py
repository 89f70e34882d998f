"""Control and inspection of the sandbox, for tests, the demo and the benchmark (``/sandbox/...``)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import PlainTextResponse, Response
from pydantic import BaseModel, Field, StrictInt, model_validator

from sandbox.scripts import SCENARIOS, Step
from sandbox.settings import CodOrder
from sandbox.settlement import settlement_csv
from sandbox.state import FactKind, FaultMode, FaultTarget, Shipment
from sandbox.whatsapp import messages_since, parse_since
from sandbox.world import World

router = APIRouter(prefix="/sandbox", tags=["sandbox control"])


class CallbackOrder(BaseModel):
    """One callback to send now, once (no retries), for a shipment the sandbox booked."""

    kind: FactKind
    cod_amount: StrictInt | None = None  # default: the booked COD value, on cod_collected
    reason: str | None = None
    received_by: str | None = None  # default: the recipient, on delivered
    documents_collected: bool | None = None  # default: true, on delivered
    duplicate: bool = False  # send the very same callback (same event id) twice
    bad_signature: bool = False
    stale_timestamp: bool = False  # signed 10 minutes ago: outside the 5-minute window
    occurred_at: datetime | None = None  # when the fact happened (default: now)


class ScriptOrder(BaseModel):
    """The life to play for ``order_ref``'s shipment: a named scenario or explicit steps."""

    order_ref: str = Field(min_length=1)
    scenario: str | None = None
    steps: list[Step] | None = None

    @model_validator(mode="after")
    def _one_source(self) -> ScriptOrder:
        if (self.scenario is None) == (self.steps is None):
            raise ValueError("give a scenario or steps")
        if self.scenario is not None and self.scenario not in SCENARIOS:
            raise ValueError(f"unknown scenario; known: {sorted(SCENARIOS)}")
        return self


class FaultOrder(BaseModel):
    target: FaultTarget
    mode: FaultMode
    seconds: float | None = Field(None, gt=0)  # none: until told "ok"


class ConfigPatch(BaseModel):
    autoplay: bool | None = None
    step_delay_ms: int | None = Field(None, ge=0)
    cod_order: CodOrder | None = None


def _world(request: Request) -> World:
    world: World = request.app.state.world
    return world


@router.get("/health")
async def health(request: Request) -> dict[str, Any]:
    world = _world(request)
    return {
        "status": "ok",
        "shipments": len(world.state.shipments),
        "messages": len(world.state.messages),
        "pending_callbacks": world.pending_callbacks,
        "playing": world.playing,
        "config": vars(world.config),
    }


@router.get("/whatsapp/messages")
async def whatsapp_messages(
    request: Request,
    to: str | None = None,
    since: str | None = None,
    fields: Annotated[
        str | None,
        Query(description="comma-separated: only these fields of each message (the benchmark "
                          "polls every second for id,wa_id,template,received_at_epoch)"),
    ] = None,
) -> Any:
    try:
        since_epoch = parse_since(since)
    except ValueError:
        raise HTTPException(400, "since must be unix seconds or an RFC 3339 time") from None
    found = messages_since(_world(request), to, since_epoch)
    if fields:
        keep = [f.strip() for f in fields.split(",") if f.strip()]
        found = [{k: m.get(k) for k in keep} for m in found]
    # encoded here: through FastAPI's response serialization a second's messages at the
    # benchmark's rates (~600 KB) cost the sandbox several ms a poll
    return Response(orjson.dumps({"count": len(found), "messages": found}),
                    media_type="application/json")


@router.get("/shipments")
async def shipments(
    request: Request,
    partner: Literal["jnt", "pos"] | None = None,
    order_ref: str | None = None,
    status: str | None = None,
    timings: bool = False,
    booked_since: float | None = None,
) -> dict[str, Any]:
    """``timings=true``: when each booking arrived and each callback was first sent and taken
    (epoch seconds), for the benchmark; ``booked_since`` (epoch seconds) leaves older ones out."""
    found = [
        s.timings() if timings else s.summary()
        for s in _world(request).state.shipments.values()
        if (partner is None or s.partner == partner)
        and (order_ref is None or s.order_ref == order_ref)
        and (status is None or s.status == status)
        and (booked_since is None or s.booked_at.timestamp() >= booked_since)
    ]
    return {"count": len(found), "shipments": found}


def _shipment(request: Request, waybill: str) -> Shipment:
    shipment = _world(request).state.shipments.get(waybill)
    if shipment is None:
        raise HTTPException(404, f"no shipment {waybill}")
    return shipment


@router.get("/shipments/{waybill}")
async def shipment(request: Request, waybill: str) -> dict[str, Any]:
    return _shipment(request, waybill).to_json()


@router.post("/shipments/{waybill}/callbacks")
async def send_callback(request: Request, waybill: str, order: CallbackOrder) -> dict[str, Any]:
    world, target = _world(request), _shipment(request, waybill)
    fact = world.record_fact(
        target,
        order.kind,
        "manual",
        cod_amount=order.cod_amount,
        received_by=order.received_by,
        documents_collected=order.documents_collected,
        reason=order.reason,
        applies=not (order.bad_signature or order.stale_timestamp),
        occurred_at=order.occurred_at,
    )
    answers = []
    for _ in range(2 if order.duplicate else 1):
        answer = await world.post_once(
            target, fact, bad_signature=order.bad_signature, stale=order.stale_timestamp
        )
        answers.append(answer.to_json())
    return {"callback": fact.record.to_json(), "answers": answers, "answer": answers[-1]}


@router.get("/scenarios")
async def scenarios() -> dict[str, Any]:
    return {
        "scenarios": {
            name: [step.model_dump(exclude_defaults=True) for step in steps]
            for name, steps in SCENARIOS.items()
        }
    }


@router.post("/scripts", status_code=201)
async def add_script(request: Request, order: ScriptOrder) -> dict[str, Any]:
    """Play this life for the order's shipment once booked (at once if it is booked already)."""
    steps = SCENARIOS[order.scenario] if order.scenario else order.steps or []
    shipment = _world(request).script(order.order_ref, steps, order.scenario)
    return {
        "order_ref": order.order_ref,
        "scenario": order.scenario,
        "steps": [step.model_dump(exclude_defaults=True, mode="json") for step in steps],
        "waybill": shipment.waybill if shipment else None,
    }


@router.get("/scripts")
async def list_scripts(request: Request) -> dict[str, Any]:
    scripts = _world(request).state.scripts
    return {
        "scripts": [
            {"order_ref": ref, "scenario": name, "steps": len(steps)}
            for ref, (name, steps) in scripts.items()
        ]
    }


@router.get("/settlements/{partner}", response_class=PlainTextResponse)
async def settlement(
    request: Request, partner: Literal["jnt", "pos"], day: Annotated[date, Query(alias="date")]
) -> PlainTextResponse:
    """The partner's COD settlement file (CSV) for one day (WIB)."""
    body = settlement_csv(_world(request).state, partner, day)
    return PlainTextResponse(body, media_type="text/csv; charset=utf-8")


@router.post("/faults")
async def set_fault(request: Request, order: FaultOrder) -> dict[str, Any]:
    _world(request).state.set_fault(order.target, order.mode, order.seconds)
    return {"target": order.target, "mode": order.mode, "seconds": order.seconds}


@router.post("/config")
async def configure(request: Request, patch: ConfigPatch) -> dict[str, Any]:
    config = _world(request).config
    for key, value in patch.model_dump(exclude_none=True).items():
        setattr(config, key, value)
    return dict(vars(config))


@router.post("/reset")
async def reset(request: Request) -> dict[str, str]:
    await _world(request).reset()
    return {"status": "reset"}
