"""shared.db.pool: a pooled connection knows every array type our statements bind from the start;
the pool (ours, not asyncpg's: bench/README.md, thirteenth round) hands a connection back only
when it is open and idle, waits in line when full, and closes after the last one is back."""

from __future__ import annotations

import asyncio
import re
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from shared.db.pool import ARRAY_TYPES, Pool, create_pool

pytestmark = pytest.mark.integration

ROOT = Path(__file__).parents[2]
# asyncpg's own codecs: no introspection query for these
BUILT_IN = {"text"}
ALIASES = {"int": "integer", "int4": "integer", "int8": "bigint", "bool": "boolean"}


def test_every_array_type_the_code_binds_is_learned_when_a_connection_opens() -> None:
    used = {
        ALIASES.get(t, t)
        for path in [*ROOT.glob("services/**/*.py"), *ROOT.glob("shared/**/*.py")]
        for t in re.findall(r"::([a-z_]+)\[\]", path.read_text())
    }
    assert used - BUILT_IN <= set(ARRAY_TYPES), used - BUILT_IN - set(ARRAY_TYPES)


async def test_a_pooled_connection_binds_those_types_without_introspecting(database: str) -> None:
    pool = await create_pool(database, "public", 1, 1)
    try:
        async with pool.acquire() as conn:
            queries: list[str] = []

            def logger(record: Any) -> None:
                queries.append(record.query)

            conn.add_query_logger(logger)
            for type_name in ARRAY_TYPES:
                assert await conn.fetchval(f"SELECT $1::{type_name}[]", []) == []
            assert not [q for q in queries if "typeinfo" in q]
            assert queries  # the logger did see the statements
            conn.remove_query_logger(logger)
    finally:
        await pool.close()


async def _pid(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval("SELECT pg_backend_pid()"))


async def test_a_connection_comes_back_only_open_and_outside_a_transaction(database: str) -> None:
    pool = await create_pool(database, "public", 1, 2)
    try:
        async with pool.acquire() as conn:
            kept = await _pid(conn)
        async with pool.acquire() as conn:
            assert await _pid(conn) == kept  # reused
            await conn.execute("BEGIN")  # left open: never handed to the next caller
        async with pool.acquire() as conn:
            assert await _pid(conn) != kept
            assert not conn.is_in_transaction()
            kept = await _pid(conn)
        # cancelled mid-statement: asyncpg may still be cancelling it, so it is closed too
        async def sleep_in_the_database() -> None:
            async with pool.acquire() as conn:
                await conn.execute("SELECT pg_sleep(10)")

        task = asyncio.create_task(sleep_in_the_database())
        await asyncio.sleep(0.3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        async with pool.acquire() as conn:
            assert await _pid(conn) != kept
            assert await conn.fetchval("SELECT 1") == 1
            kept = await _pid(conn)
        # closed by the server while idle (a restart, an admin): dropped and replaced
        admin = await asyncpg.connect(database)
        try:
            await admin.execute("SELECT pg_terminate_backend($1)", kept)
        finally:
            await admin.close()
        await asyncio.sleep(0.3)  # the closed socket is seen
        async with pool.acquire() as conn:
            assert await _pid(conn) != kept
        assert pool.get_size() == 1
    finally:
        await pool.close()


async def test_a_full_pool_serves_its_waiters_in_order_and_closes_after_the_last(
    database: str,
) -> None:
    pool = await create_pool(database, "public", 1, 1)
    order: list[str] = []

    async def use(name: str, hold_s: float) -> None:
        async with pool.acquire() as conn:
            order.append(name)
            await conn.execute("SELECT pg_sleep($1)", hold_s)

    first = asyncio.create_task(use("first", 0.3))
    await asyncio.sleep(0.05)
    waiting = [asyncio.create_task(use(f"w{i}", 0.0)) for i in range(3)]
    await asyncio.sleep(0.05)
    late = asyncio.create_task(use("late", 0.0))  # after the others: served after them
    await asyncio.gather(first, *waiting, late)
    assert order == ["first", "w0", "w1", "w2", "late"]
    assert pool.get_size() == 1

    held = asyncio.Event()
    done = asyncio.Event()

    async def hold() -> None:
        async with pool.acquire() as conn:
            held.set()
            await asyncio.sleep(0.3)
            await conn.fetchval("SELECT 1")
        done.set()

    holder = asyncio.create_task(hold())
    await held.wait()
    await pool.close()  # waits for the connection in use
    assert done.is_set()
    await holder
    with pytest.raises(asyncpg.InterfaceError, match="closed"):
        async with pool.acquire():
            pass


async def test_a_statement_cancelled_by_its_caller_is_cancelled_on_the_server(
    database: str,
) -> None:
    """Closing the connection at once is not enough: PostgreSQL notices a closed socket only when
    it next reads or writes, so the statement would run on (and could commit) with its room in
    the pool already given to a new connection."""
    pool = await create_pool(database, "public", 0, 1)
    marker = f"cancel-me-{uuid.uuid4().hex[:8]}"

    async def sleep_in_the_database() -> None:
        async with pool.acquire() as conn:
            await conn.execute(f"SELECT pg_sleep(30) /* {marker} */")

    try:
        task = asyncio.create_task(sleep_in_the_database())
        await asyncio.sleep(0.3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        async with pool.acquire() as conn:  # the room, once the old connection has closed
            running = await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE query LIKE $1 AND state = 'active'"
                " AND pid <> pg_backend_pid()", f"%{marker}%")
        assert running == 0
        assert pool.get_size() == 1
    finally:
        await pool.close()


async def test_a_failed_open_passes_its_room_to_the_next_in_line(database: str) -> None:
    """The server refuses one connection while others wait for room: they are not left waiting
    for a release that may never come (a restart drops every connection at once)."""
    refuse = asyncio.Event()
    opened = 0

    async def connect() -> asyncpg.Connection:
        nonlocal opened
        opened += 1
        if opened == 1:
            await refuse.wait()
            raise OSError("connection refused")
        return await asyncpg.connect(database)

    pool = await Pool(connect, 0, 1).start()

    async def use() -> int:
        async with pool.acquire() as conn:
            return int(await conn.fetchval("SELECT 1"))

    first = asyncio.create_task(use())
    await asyncio.sleep(0.05)
    second = asyncio.create_task(use())  # full (one open under way): waits in line
    await asyncio.sleep(0.05)
    refuse.set()
    with pytest.raises(OSError):
        await first
    assert await asyncio.wait_for(second, 5) == 1
    await asyncio.wait_for(asyncio.gather(pool.close(), pool.close()), 5)  # twice: both return
