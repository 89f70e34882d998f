"""From raw times to figures: stage latencies, completed lifecycles, duplicates."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from bench.load import Lifecycle
from services.notify.templates import TEMPLATES
from shared.contracts import topics

# WhatsApp template -> the event it tells about
TOPIC_OF_TEMPLATE = {t.name: topic for topic, t in TEMPLATES.items()}
LIFECYCLE_TEMPLATES = {TEMPLATES[t].name for t in topics.LIFECYCLE_TOPICS}

RR, DP, HC, CP, DL = topics.LIFECYCLE_TOPICS

# name -> (from, to): a point is "accepted" (HTTP answer), a topic (on Kafka) or "notified"
STAGES: dict[str, tuple[str, str]] = {
    "http_register": ("sent", "accepted"),
    "accepted_to_registered": ("accepted", RR),
    "registered_to_printed": (RR, DP),
    "printed_to_handed": (DP, HC),
    "handed_to_delivered": (HC, DL),
    "accepted_to_delivered": ("accepted", DL),
    "accepted_to_all_notified": ("accepted", "notified"),
}


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def summary_ms(seconds: Iterable[float]) -> dict[str, float | int]:
    values = [s * 1000 for s in seconds]
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "p50": round(percentile(values, 0.50), 1),
        "p95": round(percentile(values, 0.95), 1),
        "p99": round(percentile(values, 0.99), 1),
        "max": round(max(values), 1),
    }


def points(life: Lifecycle, on_kafka: Mapping[str, float]) -> dict[str, float]:
    """Every known moment of one lifecycle."""
    at: dict[str, float] = {"sent": life.sent_at, "accepted": life.accepted_at, **on_kafka}
    if all(life.messages.get(name) for name in LIFECYCLE_TEMPLATES):
        at["notified"] = max(min(times) for name, times in life.messages.items()
                             if name in LIFECYCLE_TEMPLATES)
    return at


def completed_at(life: Lifecycle, on_kafka: Mapping[str, float]) -> float | None:
    """Registered -> delivered with every notification sent; None while not yet."""
    at = points(life, on_kafka)
    if "notified" not in at or not all(t in at for t in topics.LIFECYCLE_TOPICS):
        return None
    return max(at["notified"], *(at[t] for t in topics.LIFECYCLE_TOPICS))


def partner_seconds(shipment: Mapping[str, Any]) -> float | None:
    """The partner's own time in a shipment's life up to the ``delivered`` callback, from the
    sandbox's timings (``GET /sandbox/shipments?timings=true``): from the booking's arrival to the
    first send of the first callback, and from each callback taken (2xx) to the first send of the
    next. What lies between a callback's first send and its 2xx is counted as ours: signing,
    waiting for a free sender, the request, courier's work, a refused attempt (a 404 while the
    booking's waybill is not stored yet) and the partner's retry. None while not delivered."""
    spent, since = 0.0, float(shipment["booked_at_epoch"])
    for kind, first_sent, answered in shipment["callbacks"]:
        if first_sent is None:
            return None
        spent += max(0.0, first_sent - since)
        if kind == "delivered":
            return spent
        if answered is None:
            return None
        since = answered
    return None


def stage_latencies(lives: list[Lifecycle], seen: Mapping[str, Mapping[str, float]],
                    partner: Mapping[str, float] | None = None) -> dict[str, Any]:
    """``partner``: request id -> the partner's own seconds (``partner_seconds``)."""
    out: dict[str, Any] = {}
    every = [points(life, seen.get(life.request_id, {})) for life in lives]
    for name, (start, end) in STAGES.items():
        out[name] = summary_ms(at[end] - at[start] for at in every if start in at and end in at)
    # the target's own measure: accepted -> delivered, the partners' own delay excluded
    partner = partner or {}
    out["accepted_to_delivered_own"] = summary_ms(
        at[DL] - at["accepted"] - partner[life.request_id]
        for life, at in zip(lives, every, strict=True)
        if DL in at and "accepted" in at and life.request_id in partner)
    # event on Kafka -> its WhatsApp message received by the (sandbox's) Cloud API
    per_event: dict[str, list[float]] = {t: [] for t in topics.LIFECYCLE_TOPICS}
    for life in lives:
        on_kafka = seen.get(life.request_id, {})
        for template, times in life.messages.items():
            topic = TOPIC_OF_TEMPLATE.get(template)
            if topic in on_kafka and topic in per_event:
                per_event[topic].append(min(times) - on_kafka[topic])
    out["event_to_whatsapp"] = summary_ms(v for values in per_event.values() for v in values)
    out["event_to_whatsapp_by_event"] = {t: summary_ms(v) for t, v in per_event.items()}
    return out


def message_counts(lives: list[Lifecycle]) -> dict[str, int]:
    """Duplicated messages (more than one for an event) and missing ones."""
    duplicates = missing = 0
    for life in lives:
        for name in LIFECYCLE_TEMPLATES:
            n = len(life.messages.get(name, []))
            duplicates += max(0, n - 1)
            missing += n == 0
    return {"duplicate_messages": duplicates, "missing_messages": missing}


def attach_messages(by_wa: Mapping[str, Lifecycle], messages: Iterable[Mapping[str, Any]],
                    known_ids: set[str]) -> int:
    """File the sandbox's WhatsApp messages under their requests (``by_wa``: the lifecycles by
    their recipient's WhatsApp id); returns how many were new."""
    added = 0
    for message in messages:
        if message["id"] in known_ids:
            continue
        known_ids.add(message["id"])
        life = by_wa.get(message["wa_id"])
        if life is None or not message.get("template"):
            continue
        life.messages.setdefault(message["template"], []).append(float(message["received_at_epoch"]))
        added += 1
    return added


def repeated_document_numbers(numbers: Mapping[str, list[str]]) -> dict[str, int]:
    """document-printed twice for a request, or one number for two requests."""
    twice = sum(1 for values in numbers.values() if len(values) > 1)
    owners = Counter(n for values in numbers.values() for n in set(values))
    shared = sum(1 for c in owners.values() if c > 1)
    return {"requests_printed_twice": twice, "numbers_used_twice": shared}
