"""Service levels: ready -> handed over -> delivered, against the promise of 2-4 days.

"Ready" is the document-printed event (the applicant's "ready" message). A request is ``at_risk``
past the promise's lower bound, ``late`` past its upper bound while not delivered, and
``delivered_late`` when it arrived after it. Returned shipments are counted apart.

    GET /service-levels?from=2024-05-01&to=2024-05-31[&partner=jnt]   figures per partner
    GET /service-levels/late?state=late|at_risk|delivered_late[&partner=jnt]   the requests
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request

from .api import promise_of, shipment_view
from .domain import ServiceLevel, day_bounds, office_timezone, percentile, service_level

router = APIRouter(tags=["service levels"])


def _stats(seconds: list[float]) -> dict[str, float | None]:
    hours = [s / 3600 for s in seconds]
    pick = {"median_h": percentile(hours, 50), "p90_h": percentile(hours, 90),
            "max_h": max(hours) if hours else None}
    return {k: None if v is None else round(v, 2) for k, v in pick.items()}


def summarize(levels: list[ServiceLevel]) -> dict[str, Any]:
    states: dict[str, int] = defaultdict(int)
    for level in levels:
        states[level.state] += 1
    delivered = states["on_time"] + states["delivered_late"]

    def measured(attr: str) -> list[float]:
        return [v for v in (getattr(x, attr) for x in levels) if v is not None]

    return {
        "ready": len(levels),
        "delivered": delivered,
        "on_time": states["on_time"],
        "delivered_late": states["delivered_late"],
        "late_open": states["late"],
        "at_risk": states["at_risk"],
        "on_track": states["on_track"],
        "returned": states["returned"],
        "on_time_rate": round(states["on_time"] / delivered, 4) if delivered else None,
        "ready_to_handed": _stats(measured("ready_to_handed_s")),
        "handed_to_delivered": _stats(measured("handed_to_delivered_s")),
        "ready_to_delivered": _stats(measured("ready_to_delivered_s")),
    }


@router.get("/service-levels")
async def service_levels(
    request: Request,
    from_: Annotated[date, Query(alias="from", description="First office day documents were ready")],
    to: Annotated[date | None, Query(description="Last office day (default: from)")] = None,
    partner: Literal["jnt", "pos"] | None = None,
) -> Any:
    rt = request.app.state.rt
    tz = office_timezone(rt.settings.office_utc_offset_hours)
    start, _ = day_bounds(from_, tz)
    _, end = day_bounds(to or from_, tz)
    rows = await rt.pool.fetch(
        "SELECT partner, printed_at, handed_at, delivered_at, returned FROM shipments"
        " WHERE printed_at >= $1 AND printed_at < $2 AND status <> 'cancelled'"
        " AND ($3::text IS NULL OR partner = $3)",
        start,
        end,
        partner,
    )
    promise, now = promise_of(request), datetime.now(UTC)
    by_partner: dict[str, list[ServiceLevel]] = defaultdict(list)
    for r in rows:
        level = service_level(r["printed_at"], r["handed_at"], r["delivered_at"], r["returned"],
                              now, promise)
        by_partner[r["partner"] or "unknown"].append(level)
    everyone = [level for levels in by_partner.values() for level in levels]
    return {
        "from": from_.isoformat(),
        "to": (to or from_).isoformat(),
        "promise_days": {"min": promise.min_days, "max": promise.max_days},
        "all": summarize(everyone),
        "partners": {name: summarize(levels) for name, levels in sorted(by_partner.items())},
    }


_LATE = """
SELECT * FROM shipments
WHERE printed_at IS NOT NULL AND status <> 'cancelled' AND ($1::text IS NULL OR partner = $1)
  AND CASE $2::text
      WHEN 'late' THEN NOT delivered AND NOT returned AND printed_at < $3::timestamptz - $4::interval
      WHEN 'at_risk' THEN NOT delivered AND NOT returned
                          AND printed_at < $3::timestamptz - $5::interval AND printed_at >= $3::timestamptz - $4::interval
      ELSE delivered AND delivered_at >= $3::timestamptz - $6::interval
           AND delivered_at > printed_at + $4::interval
  END
ORDER BY printed_at LIMIT $7
"""


@router.get("/service-levels/late")
async def late_requests(
    request: Request,
    state: Literal["late", "at_risk", "delivered_late"] = "late",
    partner: Literal["jnt", "pos"] | None = None,
    since_days: int = Query(30, ge=1, le=366, description="delivered_late: how far back"),
    limit: int = Query(200, ge=1, le=1000),
) -> Any:
    """The requests past (or nearing) the promise, most overdue first."""
    promise, now = promise_of(request), datetime.now(UTC)
    rows = await request.app.state.rt.pool.fetch(
        _LATE,
        partner,
        state,
        now,
        timedelta(days=promise.max_days),
        timedelta(days=promise.min_days),
        timedelta(days=since_days),
        limit,
    )
    return {"state": state, "requests": [shipment_view(r, promise, now) for r in rows]}
