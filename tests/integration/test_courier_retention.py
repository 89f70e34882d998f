"""Courier's retention against a real PostgreSQL: a shipment that is over, with no originals owed,
loses the recipient's data once the retention period has passed; nothing else does, a second run
erases nothing, late writes do not refill it, and the ops views cope with the erased columns."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from services.courier import events as courier_events
from services.courier import retention
from services.courier.api import shipment_view
from services.courier.domain import Promise
from services.courier.originals import _view as originals_view
from services.courier.partners import PartnerEvent
from services.courier.webhooks import apply_fact
from shared.db.pool import Pool
from shared.retention import run_once
from tests.support.events import registered
from tests.support.infra import migrated_pool

pytestmark = pytest.mark.integration

MIGRATIONS = Path(retention.__file__).parent / "migrations"
NOW = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
OLD = NOW - timedelta(days=91)
RECENT = NOW - timedelta(days=89)

PERSONAL = {"recipient_name", "recipient_phone", "address", "received_by", "last_failure_reason",
            "return_reason", "cancel_reason", "booking_error"}
ADDRESS = {"street": "Jl. Mawar 1", "rt_rw": "001/002", "kelurahan": "Menteng",
           "kecamatan": "Menteng", "kabupaten_kota": "Jakarta Pusat", "provinsi": "DKI Jakarta",
           "postal_code": "10310"}


@pytest.fixture
async def db(database: str) -> AsyncIterator[tuple[str, Pool]]:
    schema = f"cr_{uuid.uuid4().hex[:8]}"
    async with migrated_pool(database, schema, MIGRATIONS) as pool:
        yield schema, pool  # run_once's advisory lock is per schema


async def shipment(pool: Pool, status: str, originals: str, at: datetime) -> uuid.UUID:
    """A shipment in ``status`` whose last change was ``at``, every personal column filled."""
    request_id = uuid.uuid4()
    delivered = status in ("delivered", "completed")
    returned = status == "returned_to_office"
    handed = status not in ("cancelled",)
    await pool.execute(
        "INSERT INTO shipments (request_id, correlation_id, registered, partner, document_type,"
        " recipient_name, recipient_phone, address, cod_fee, printed_at, document_number, status,"
        " waybill, booked_at, booking_attempts, booking_error, handed, handed_at, cod_paid,"
        " cod_amount_collected, cod_paid_at, delivered, delivered_at, received_by,"
        " documents_collected, failed_attempts, last_failure_reason, last_failed_at, returned,"
        " returned_at, return_reason, cancelled_at, cancel_reason, requirement_documents,"
        " originals_status, originals_due_at, originals_received_at, originals_received_by,"
        " created_at, updated_at)"
        " VALUES ($1, $2, true, 'jnt', 'kk', 'Siti Aminah', '+6281234567890', $3::jsonb, 20000,"
        " $4, $5, $6, $7, $4, 2, 'receiverphone +6281234567890 ditolak', $8, $9, $10, $11, $12,"
        " $13, $14, $15, $16, 1, 'rumah Bu Siti kosong', $4, $17, $18, $19, $20, $21,"
        " '[\"kk_lama\"]'::jsonb, $22, $23, $24, $25, $4, $26)",
        request_id, f"corr-{request_id.hex[:6]}", json.dumps(ADDRESS), at - timedelta(days=5),
        f"KK-{request_id.hex[:8]}", status, f"JX{request_id.hex[:10]}",
        handed, at - timedelta(days=4) if handed else None,
        delivered and status == "completed", 20000 if status == "completed" else None,
        at - timedelta(days=1) if status == "completed" else None,
        delivered, at - timedelta(days=1) if delivered else None,
        "Siti (ybs)" if delivered else None, True if delivered else None,
        returned, at if returned else None, "alamat tidak ditemukan, Pak RT" if returned else None,
        at if status == "cancelled" else None,
        "pemohon minta batal, nomor 0812 (loket)" if status == "cancelled" else None,
        originals, at + timedelta(days=7) if delivered else None,
        at if originals.startswith("received") else None,
        "Pak Joko (arsip)" if originals.startswith("received") else None, at,
    )  # fmt: skip
    await pool.execute(
        "INSERT INTO originals_custody (request_id, step, actor, detail, at)"
        " VALUES ($1, 'collected_at_door', 'kurir jnt (resi X)', 'diterima oleh Siti (ybs)', $2)",
        request_id, at - timedelta(days=1),
    )  # fmt: skip
    return request_id


async def rows(pool: Pool) -> dict[uuid.UUID, dict[str, Any]]:
    return {r["request_id"]: dict(r) for r in await pool.fetch("SELECT * FROM shipments")}


async def custody(pool: Pool) -> dict[uuid.UUID, list[tuple[Any, ...]]]:
    out: dict[uuid.UUID, list[tuple[Any, ...]]] = {}
    for r in await pool.fetch("SELECT request_id, step, actor, detail, at FROM originals_custody"
                              " ORDER BY id"):
        out.setdefault(r["request_id"], []).append(tuple(r)[1:])
    return out


async def test_shipments_over_past_the_period_lose_the_recipient_data(
    db: tuple[str, Pool],
) -> None:
    schema, pool = db
    erased_ids = [
        await shipment(pool, "completed", "received", OLD),  # final + old + originals all back
        await shipment(pool, "delivered", "none", OLD),  # delivered, nothing to bring back
        await shipment(pool, "returned_to_office", "none", OLD),
        await shipment(pool, "cancelled", "none", OLD),
    ]
    kept_ids = [
        await shipment(pool, "completed", "received", RECENT),  # final but recent
        await shipment(pool, "delivery_failed", "awaiting_delivery", OLD),  # old, not final
        await shipment(pool, "handed_to_courier", "awaiting_delivery", OLD),
        await shipment(pool, "completed", "with_courier", OLD),  # originals still with the courier
        await shipment(pool, "delivered", "unconfirmed", OLD),
        await shipment(pool, "completed", "not_collected", OLD),  # originals need a person
        await shipment(pool, "completed", "received_incomplete", OLD),
    ]
    before, trail_before = await rows(pool), await custody(pool)

    report = await run_once(pool, schema, retention.ERASURES, 90, now=NOW)

    assert report == {"shipments_erased": 4, "custody_details_erased": 4,
                      "dead_letters_deleted": 0, "retention_days": 90}
    after, trail = await rows(pool), await custody(pool)
    for erased in erased_ids:
        row = after[erased]
        assert {k: row[k] for k in PERSONAL} == dict.fromkeys(PERSONAL)
        assert row["personal_data_erased_at"] is not None
        assert row["erasable_since"] is None  # erased: out of retention's index (migration 0005)
        kept = {k: v for k, v in before[erased].items()
                if k not in PERSONAL | {"personal_data_erased_at", "erasable_since"}}
        # status, waybill, partner, COD, document number, originals, every time: unchanged
        assert {k: row[k] for k in kept} == kept
        assert [(s, a, d, t) for s, a, d, t in trail[erased]] == [
            (s, a, None, t) for s, a, _, t in trail_before[erased]
        ]
    for untouched in kept_ids:
        assert after[untouched] == before[untouched]
        assert trail[untouched] == trail_before[untouched]
    assert before[erased_ids[0]]["originals_received_by"] == "Pak Joko (arsip)"  # staff: kept
    assert after[erased_ids[0]]["originals_received_by"] == "Pak Joko (arsip)"

    again = await run_once(pool, schema, retention.ERASURES, 90, now=NOW)
    assert again == {"shipments_erased": 0, "custody_details_erased": 0,
                     "dead_letters_deleted": 0, "retention_days": 90}
    assert await rows(pool) == after

    # the ops views answer for erased rows
    for erased in erased_ids:
        row = await pool.fetchrow("SELECT * FROM shipments WHERE request_id = $1", erased)
        view = shipment_view(row, Promise(), NOW)
        assert view["recipient_phone"] is None and view["personal_data_erased_at"] is not None
        assert view["status"] == before[erased]["status"]
        assert originals_view(row, NOW)["status"] == before[erased]["originals_status"]


async def test_late_writes_do_not_refill_an_erased_shipment(db: tuple[str, Pool]) -> None:
    schema, pool = db
    returned = await shipment(pool, "returned_to_office", "none", OLD)
    delivered = await shipment(pool, "delivered", "none", OLD)
    cancelled = await shipment(pool, "cancelled", "none", OLD)
    # cancelled before its registration arrived
    await pool.execute("UPDATE shipments SET registered = false WHERE request_id = $1", cancelled)
    assert (await run_once(pool, schema, retention.ERASURES, 90, now=NOW))["shipments_erased"] == 3
    before = await rows(pool)
    waybill = {k: v["waybill"] for k, v in before.items()}

    def fact(request_id: uuid.UUID, kind: str, **kw: Any) -> PartnerEvent:
        return PartnerEvent(partner="jnt", partner_event_id=f"late-{kind}-{request_id}",  # type: ignore[arg-type]
                            waybill=waybill[request_id], kind=kind, occurred_at=NOW, **kw)

    async with pool.acquire() as conn:
        await apply_fact(conn, schema, fact(returned, "delivery_failed", reason="Bu Siti pindah"))
        await apply_fact(conn, schema, fact(delivered, "delivered", received_by="Budi tetangga"))
        await apply_fact(conn, schema, fact(delivered, "returned", reason="Bu Siti pindah"))
        async with conn.transaction():  # a registration replayed months later
            await courier_events.apply_batch(conn, [registered(cancelled, "corr-late")])

    after = await rows(pool)
    for request_id in (returned, delivered, cancelled):
        assert {k: after[request_id][k] for k in PERSONAL} == dict.fromkeys(PERSONAL)
    assert after[cancelled] == before[cancelled]
    anomalies = await pool.fetchval("SELECT count(*) FROM shipment_anomalies")
    assert anomalies == 2  # the late facts were still recorded as anomalies
