"""Notify's retention on real PostgreSQL: a request whose messages are all final and old is erased
(names, phones, texts, event data, consumed events, error texts) and nothing else is; the rest of
the rows stays as it was; a second run erases nothing; an erased message is never sent again (the
claim, the ops retry, a replayed dead letter, a late "outside the window" callback)."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from services.notify import events, repository, retention, sender
from shared.contracts import topics
from shared.contracts.events import DeliveryFailed, new_event
from shared.db.pool import Pool, create_pool, migrate
from shared.retention import run_once
from shared.whatsapp.client import MessageStatus, StatusError

pytestmark = pytest.mark.integration

MIGRATIONS = Path(retention.__file__).parent / "migrations"
NOW = datetime.now(UTC)
OLD = NOW - timedelta(days=120)
RECENT = NOW - timedelta(days=10)

# what retention never touches
KEPT = (
    "id, event_id, request_id, event_type, occurred_at, recipient, status, attempts, template,"
    " kind, wamid, sent_at, wa_status, wa_status_at, created_at, next_attempt_at"
)
PERSONAL = ("body", "event_data", "source", "error", "wa_error")


@pytest.fixture
async def db(database: str) -> AsyncIterator[tuple[str, Pool]]:
    schema = f"notify_{uuid.uuid4().hex[:8]}"
    await migrate(database, schema, MIGRATIONS)
    pool = await create_pool(database, schema, 2, 4)
    yield schema, pool
    async with pool.acquire() as conn:
        await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
    await pool.close()


async def add_recipient(conn: asyncpg.Connection, at: datetime, *, door: bool = False) -> uuid.UUID:
    rid = uuid.uuid4()
    await conn.execute(
        "INSERT INTO recipients (request_id, phone, name, tracking_code, document_type, partner,"
        " cod_fee, requirement_documents, registered_at, delivery_name, delivery_phone)"
        " VALUES ($1, '+628123456789', 'Siti Aminah', 'KTM-1', 'akta_kematian', 'jnt', 20000,"
        " '[\"kk_lama\"]', $2, $3, $4)",
        rid, at, "Keluarga Siti" if door else None, "+628129999001" if door else None,
    )
    return rid


async def add_note(
    conn: asyncpg.Connection, rid: uuid.UUID, event_type: str, status: str, at: datetime, *,
    recipient: str = "applicant", kind: str = "template", wa_status: str | None = "read",
    wa_status_at: datetime | None = None, error: str | None = None,
    wa_error: str | None = None, source: str | None = None,
) -> int:
    sent = status == "sent"
    return await conn.fetchval(
        "INSERT INTO notifications (event_id, request_id, event_type, occurred_at, event_data,"
        " status, attempts, next_attempt_at, template, body, wamid, error, sent_at, created_at,"
        " recipient, kind, source, wa_status, wa_status_at, wa_error)"
        " VALUES ($1, $2, $3, $4, $5, $6, 1, $4, $7, $8, $9, $10, $11, $4, $12, $13, $14, $15,"
        " $16, $17) RETURNING id",
        uuid.uuid4(), rid, event_type, at,
        json.dumps({"received_by": "Budi", "reason": "Bu Siti pindah", "waybill": "JT1"}),
        status, "ketanmu_x" if sent else None, "Halo Siti Aminah, ..." if sent else None,
        f"wamid.{uuid.uuid4().hex}" if sent else None, error, at if sent else None,
        recipient, kind if sent else None, source, wa_status if sent else None,
        (wa_status_at or at + timedelta(minutes=1)) if sent else None, wa_error,
    )


async def kept(conn: asyncpg.Connection) -> list[dict[str, Any]]:
    return [dict(r) for r in await conn.fetch(f"SELECT {KEPT} FROM notifications ORDER BY id")]


async def personal(conn: asyncpg.Connection, rid: uuid.UUID) -> tuple[dict[str, Any], list[Any]]:
    r = await conn.fetchrow(
        "SELECT phone, name, delivery_name, delivery_phone, tracking_code, document_type,"
        " partner, cod_fee, requirement_documents, registered_at, personal_data_erased_at"
        " FROM recipients WHERE request_id = $1", rid)
    notes = await conn.fetch(
        f"SELECT {', '.join(PERSONAL)}, personal_data_erased_at FROM notifications"
        " WHERE request_id = $1 ORDER BY id", rid)
    return dict(r), [dict(n) for n in notes]


async def test_retention_erases_finished_old_requests_only_once(
    db: tuple[str, Pool],
) -> None:
    schema, pool = db
    async with pool.acquire() as conn:
        # erased: every message final (sent, or given up), the newest long ago
        old = await add_recipient(conn, OLD, door=True)
        await add_note(conn, old, topics.REQUEST_REGISTERED, "sent", OLD,
                       source='{"nik": "3171234567890123"}')
        text = await add_note(conn, old, topics.DOCUMENT_PRINTED, "sent", OLD + timedelta(days=1),
                              kind="text", wa_status="sent")
        await add_note(conn, old, topics.DELIVERED, "sent", OLD + timedelta(days=3),
                       wa_status="failed", wa_error="Message undeliverable (code 131026)")
        event_at = OLD + timedelta(days=2)
        await add_note(conn, old, topics.HANDED_TO_COURIER, "sent", event_at, recipient="delivery")
        given_up = await add_note(conn, old, topics.DELIVERY_FAILED, "failed", event_at,
                                  error="whatsapp send failed: Siti", source='{"reason": "x"}')
        # kept: all sent, recently
        recent = await add_recipient(conn, RECENT)
        await add_note(conn, recent, topics.REQUEST_REGISTERED, "sent", RECENT)
        # kept: old, but one message still pending
        waiting = await add_recipient(conn, OLD)
        await add_note(conn, waiting, topics.REQUEST_REGISTERED, "sent", OLD)
        await add_note(conn, waiting, topics.DOCUMENT_PRINTED, "pending", OLD + timedelta(days=1),
                       source='{"x": 1}')
        # kept: old and sent, but WhatsApp reported on it recently (read 5 days ago)
        late_read = await add_recipient(conn, OLD)
        await add_note(conn, late_read, topics.REQUEST_REGISTERED, "sent", OLD,
                       wa_status_at=NOW - timedelta(days=5))
        # kept: old and every message sent, but the request never finished (a late event of it
        # must still reach the applicant)
        unfinished = await add_recipient(conn, OLD)
        await add_note(conn, unfinished, topics.REQUEST_REGISTERED, "sent", OLD)
        await add_note(conn, unfinished, topics.HANDED_TO_COURIER, "sent", OLD + timedelta(days=1))
        # the 24-hour window's rows, status callbacks as received, a dead letter
        await conn.execute(
            "INSERT INTO conversations (wa_id, last_inbound_at) VALUES"
            " ('628111', $1), ('628222', $2)", NOW - timedelta(days=3), NOW - timedelta(hours=1))
        await conn.execute(
            "INSERT INTO whatsapp_statuses (wamid, status, occurred_at, received_at) VALUES"
            " ('wamid.old', 'read', $1, $1), ('wamid.new', 'read', $2, $2)", OLD, RECENT)
        await conn.execute(
            "INSERT INTO dead_letter (topic, partition, \"offset\", value, reason, created_at)"
            " VALUES ('delivered', 0, 1, 'x', 'bad', $1), ('delivered', 0, 2, 'y', 'bad', $2)",
            OLD, RECENT)
        before = await kept(conn)
        untouched = {rid: await personal(conn, rid) for rid in (recent, waiting, late_read, unfinished)}

    report = await run_once(pool, schema, retention.ERASURES, retention_days=90, now=NOW)
    assert report == {
        "requests_erased": 1, "late_notifications_erased": 0, "conversations_deleted": 1,
        "whatsapp_statuses_deleted": 1, "dead_letters_deleted": 1, "retention_days": 90,
    }

    async with pool.acquire() as conn:
        assert await kept(conn) == before  # statuses, times, wamids, templates: as they were
        r, notes = await personal(conn, old)
        assert r["personal_data_erased_at"] is not None
        assert (r["phone"], r["name"], r["delivery_name"], r["delivery_phone"]) == (None,) * 4
        assert (r["tracking_code"], r["document_type"], r["partner"], r["cod_fee"]) == (
            "KTM-1", "akta_kematian", "jnt", 20000)
        assert r["registered_at"] == OLD
        assert len(notes) == 5
        for n in notes:
            assert all(n[c] is None for c in PERSONAL), n
            assert n["personal_data_erased_at"] is not None
        for rid, data in untouched.items():
            assert await personal(conn, rid) == data
        assert [r["wa_id"] for r in await conn.fetch("SELECT wa_id FROM conversations")] == [
            "628222"]
        assert await conn.fetchval("SELECT array_agg(wamid) FROM whatsapp_statuses") == [
            "wamid.new"]

    again = await run_once(pool, schema, retention.ERASURES, retention_days=90, now=NOW)
    assert {k: v for k, v in again.items() if k != "retention_days"} == dict.fromkeys(
        ("requests_erased", "late_notifications_erased", "conversations_deleted",
         "whatsapp_statuses_deleted", "dead_letters_deleted"), 0)

    async with pool.acquire() as conn:
        # an erased message is never sent again: not by ops...
        assert not await repository.retry_failed(conn, given_up)
        # ...nor by a replayed dead letter of its event...
        given_up_event = await conn.fetchval("SELECT event_id FROM notifications WHERE id = $1",
                                             given_up)
        replay = new_event(topics.DELIVERY_FAILED, request_id=old, correlation_id="c",
                           causation_id="replay", producer="courier",
                           data=DeliveryFailed(partner="jnt", waybill="JT1", failed_at=OLD,
                                               reason="Bu Siti pindah", attempt=1))
        async with conn.transaction():
            await events.apply_batch(conn, [replay.model_copy(update={"event_id": given_up_event})])
        row = await conn.fetchrow("SELECT status, source FROM notifications WHERE id = $1",
                                  given_up)
        assert (row["status"], row["source"]) == ("failed", None)
        # ...nor by a late "free text outside the window" callback (and it does not crash)
        wamid = await conn.fetchval("SELECT wamid FROM notifications WHERE id = $1", text)
        async with conn.transaction():
            rearmed = await repository.record_statuses(conn, [MessageStatus(
                id=wamid, status="failed", timestamp=NOW, recipient_id="628123456789",
                errors=(StatusError(131047, "Re-engagement message", None, None),))])
        assert rearmed == 0
        row = await conn.fetchrow("SELECT status, wa_status, body, wa_error FROM notifications"
                                  " WHERE id = $1", text)
        assert tuple(row.values()) == ("sent", "failed", None, None)

        # an event noted after the request was erased has nobody to go to: never claimed...
        late = new_event(topics.DELIVERY_FAILED, request_id=old, correlation_id="c",
                         causation_id="late", producer="courier",
                         data=DeliveryFailed(partner="jnt", waybill="JT1", failed_at=NOW,
                                             reason="Bu Siti pindah", attempt=2))
        async with conn.transaction():
            await events.apply_batch(conn, [late])
        claimed = await conn.fetch(sender._CLAIM, 10, 30.0, uuid.uuid4(), 120.0)
        assert [c["request_id"] for c in claimed] == [waiting]

    # ...and a day later given up and erased. "A day later" counts from the clock, not NOW: the
    # late row's created_at is the database's now(), and NOW (taken at import) may be minutes old
    # when the suite runs this test late (it failed so after 5 minutes of e2e tests)
    a_day_later = datetime.now(UTC) + timedelta(days=1, minutes=5)
    report = await run_once(pool, schema, retention.ERASURES, retention_days=90, now=a_day_later)
    assert report["late_notifications_erased"] == 1
    assert report["requests_erased"] == 0
    async with pool.acquire() as conn:
        row = await conn.fetchrow(
            "SELECT status, event_data, source, body, personal_data_erased_at FROM notifications"
            " WHERE event_id = $1", late.event_id)
        assert row["status"] == "failed"
        assert (row["event_data"], row["source"], row["body"]) == (None, None, None)
        assert row["personal_data_erased_at"] is not None
    report = await run_once(pool, schema, retention.ERASURES, retention_days=90, now=a_day_later)
    assert report["late_notifications_erased"] == 0
