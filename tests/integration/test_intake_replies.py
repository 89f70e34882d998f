"""Intake's WhatsApp replies go out in order per applicant, even after a sender died holding one."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import services.intake
from services.intake import replies
from shared.db.pool import Pool
from tests.support.infra import migrated_pool

pytestmark = pytest.mark.integration

MIGRATIONS = Path(services.intake.__file__).parent / "migrations"
SCHEMA = f"intake_r_{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
async def pool(database: str) -> AsyncIterator[Pool]:
    async with migrated_pool(database, SCHEMA, MIGRATIONS) as pool:
        yield pool


async def test_a_reply_waits_for_the_earlier_one_of_its_applicant(pool: Pool) -> None:
    async with pool.acquire() as conn:
        for wa_id, body in [("6281111", "RT/RW?"), ("6281111", "Kelurahan?"), ("6282222", "Halo")]:
            await replies.queue_reply(conn, wa_id, body)
        # a sender claims the first and dies before sending it
        first = await replies._claim(conn, 30.0, 1)
        assert [r["body"] for r in first] == ["RT/RW?"]
        # the next claim takes the other applicant's reply, not the dead sender's applicant's next
        later = await replies._claim(conn, 30.0, 10)
        assert [r["body"] for r in later] == ["Halo"]
        # once the dead sender's claim expires, the replies go out in their order
        await conn.execute("UPDATE wa_outbound SET claimed_until = now() - interval '1 s'"
                           " WHERE id = $1", first[0]["id"])
        again = await replies._claim(conn, 30.0, 10)
        assert [r["body"] for r in again] == ["RT/RW?"]
        await replies._finish(conn, again[0]["id"], "sent", wamid="wamid.1")
        assert [r["body"] for r in await replies._claim(conn, 30.0, 10)] == ["Kelurahan?"]
