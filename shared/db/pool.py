"""PostgreSQL access: one pool per service, bound to the service's own schema."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import asyncpg

from shared.logging import get_logger

log = get_logger(__name__)

SHARED_MIGRATIONS = Path(__file__).parent / "migrations"

# Errors that mean "the database is not reachable right now": retry, never dead-letter.
TRANSIENT_DB_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    ConnectionError,
    asyncio.TimeoutError,
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.SerializationError,
    asyncpg.exceptions.DeadlockDetectedError,
    asyncpg.exceptions.InsufficientResourcesError,
)


def advisory_key(name: str) -> int:
    """A stable 63-bit key for ``pg_advisory_lock`` derived from a name."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big") & 0x7FFF_FFFF_FFFF_FFFF


async def _no_session_reset(_: asyncpg.Connection) -> None:
    """Released connections skip asyncpg's reset query (``pg_advisory_unlock_all(); CLOSE ALL;
    UNLISTEN *; RESET ALL``): one more round trip and PostgreSQL transaction on every release,
    about a tenth of the services' database work. asyncpg still rolls back a transaction left open.

    The rule that makes it safe: nothing leaves session state on a pooled connection. No ``SET``
    (only ``SET LOCAL``), no ``LISTEN`` (the outbox relay listens on a connection of its own), no
    cursors outside a transaction; a session advisory lock (intake's retention job) is unlocked
    before release, and the connection is terminated if the unlock cannot be made.
    """


# The array types our statements bind. asyncpg knows none of them built in: a connection learns
# each with an introspection query (a recursive CTE over the catalogs, ~8 ms of PostgreSQL CPU,
# mostly planning) the first time it binds one; a pool that grows under load paid that 4-5 times
# per new connection, in the middle of the load (the benchmark at 30/s: 83 such queries, ~1.5% of
# the machine's CPU). Learned together, in one query, when a connection opens.
ARRAY_TYPES = ("uuid", "bigint", "bytea", "timestamptz", "boolean", "integer")
_LEARN_ARRAY_TYPES = "SELECT " + ", ".join(f"${n}::{t}[]" for n, t in enumerate(ARRAY_TYPES, 1))


async def _learn_array_types(conn: asyncpg.Connection) -> None:
    await conn.prepare(_LEARN_ARRAY_TYPES)


async def create_pool(dsn: str, schema: str, min_size: int = 2, max_size: int = 10) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        server_settings={"search_path": schema, "application_name": schema},
        reset=_no_session_reset,
        init=_learn_array_types,
    )
    assert pool is not None
    return pool


async def connect(dsn: str, schema: str) -> asyncpg.Connection:
    return await asyncpg.connect(
        dsn, server_settings={"search_path": schema, "application_name": f"{schema}-relay"}
    )


async def wait_for_database(dsn: str, timeout_s: float = 60.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        try:
            conn = await asyncpg.connect(dsn, timeout=5)
            await conn.close()
            return
        except TRANSIENT_DB_ERRORS as exc:
            if loop.time() > deadline:
                raise TimeoutError(f"PostgreSQL did not answer within {timeout_s:.0f}s") from exc
            await asyncio.sleep(0.5)


async def migrate(dsn: str, schema: str, service_migrations: Path) -> list[str]:
    """Apply the shared and the service's SQL migrations to ``schema``; return what was applied.

    Files are applied in name order, each once, in its own transaction, under an advisory lock so
    two instances starting together do not race.
    """
    conn = await asyncpg.connect(dsn)
    applied: list[str] = []
    try:
        await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        await conn.execute(f'SET search_path TO "{schema}"')
        await conn.execute("SELECT pg_advisory_lock($1)", advisory_key(f"migrate:{schema}"))
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["name"] for r in await conn.fetch("SELECT name FROM schema_migrations")}
        files = [("shared/" + p.name, p) for p in sorted(SHARED_MIGRATIONS.glob("*.sql"))]
        files += [(p.name, p) for p in sorted(service_migrations.glob("*.sql"))]
        for name, path in files:
            if name in done:
                continue
            async with conn.transaction():
                await conn.execute(path.read_text())
                await conn.execute("INSERT INTO schema_migrations (name) VALUES ($1)", name)
            applied.append(name)
        await conn.execute("SELECT pg_advisory_unlock($1)", advisory_key(f"migrate:{schema}"))
    finally:
        await conn.close()
    if applied:
        log.info("migrations applied", schema=schema, files=applied)
    return applied
