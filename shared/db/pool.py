"""PostgreSQL access: one pool per service, bound to the service's own schema."""

from __future__ import annotations

import asyncio
import collections
import hashlib
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

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


# The array types our statements bind. asyncpg knows none of them built in: a connection learns
# each with an introspection query (a recursive CTE over the catalogs, ~8 ms of PostgreSQL CPU,
# mostly planning) the first time it binds one; a pool that grows under load paid that 4-5 times
# per new connection, in the middle of the load (the benchmark at 30/s: 83 such queries, ~1.5% of
# the machine's CPU). Learned together, in one query, when a connection opens.
ARRAY_TYPES = ("uuid", "bigint", "bytea", "timestamptz", "boolean", "integer")
_LEARN_ARRAY_TYPES = "SELECT " + ", ".join(f"${n}::{t}[]" for n, t in enumerate(ARRAY_TYPES, 1))


async def _learn_array_types(conn: asyncpg.Connection) -> None:
    await conn.prepare(_LEARN_ARRAY_TYPES)


# How long a connection released mid-statement (cancelled, timed out) may take to have that
# statement cancelled on the server and close; then it is cut off.
_RETIRE_TIMEOUT_S = 10.0


class Pool:
    """The services' pool: ``min_size`` connections opened at start, at most ``max_size``.

    Why not ``asyncpg.Pool``: its acquire-and-release costs 35-55 us of CPU per use on this
    machine (a proxy object, a shielded task and an inactivity timer per release, measured in
    bench/README.md, thirteenth round), as much as the statement it wraps; a lifecycle makes about
    9 of them. This one hands out the connection itself: a list pop and append.

    - Full: callers wait in line, first come first served; a released connection, or the room
      left by one that was closed, goes to the first in line.
    - A connection goes back only if it is open and idle. One released inside a transaction (its
      ``async with`` left by an exception before the transaction's own exit ran), or by a
      cancellation or timeout (its statement may still be running), is closed: gracefully, so
      that asyncpg first has that statement cancelled on the server. Its room is given on once it
      is closed, so the server never holds more than ``max_size`` of this pool's connections.
    - No reset query on release (asyncpg's ``pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *;
      RESET ALL``, one more round trip and transaction each time). The rule that makes it safe:
      nothing leaves session state on a pooled connection. No ``SET`` (only ``SET LOCAL``), no
      ``LISTEN`` (the outbox relay listens on a connection of its own), no cursors outside a
      transaction; a session advisory lock (intake's retention job) is unlocked before release,
      and the connection is terminated if the unlock cannot be made.
    """

    def __init__(
        self, connect: Callable[[], Awaitable[asyncpg.Connection]], min_size: int, max_size: int
    ) -> None:
        if not 0 <= min_size <= max_size or max_size < 1:
            raise ValueError(f"pool sizes: 0 <= min_size ({min_size}) <= max_size ({max_size})")
        self._connect = connect
        self._min_size, self._max_size = min_size, max_size
        self._idle: list[asyncpg.Connection] = []
        self._all: set[asyncpg.Connection] = set()  # open or closing, idle or not
        self._opening = 0  # opens under way, and rooms given to a waiter that will open one
        self._waiters: collections.deque[asyncio.Future[asyncpg.Connection | None]] = (
            collections.deque()
        )
        self._retiring: set[asyncio.Task[None]] = set()
        self._closed = False
        self._drained: asyncio.Future[None] | None = None

    async def start(self) -> Pool:
        opened = await asyncio.gather(
            *(self._connect() for _ in range(self._min_size)), return_exceptions=True
        )
        conns = [c for c in opened if isinstance(c, asyncpg.Connection)]
        failed = [e for e in opened if isinstance(e, BaseException)]
        if failed:
            for conn in conns:
                conn.terminate()
            raise failed[0]
        self._all.update(conns)
        self._idle.extend(conns)
        return self

    def get_size(self) -> int:
        return len(self._all) + self._opening

    def acquire(self) -> _Acquired:
        return _Acquired(self)

    async def _get(self) -> asyncpg.Connection:
        while True:
            if self._closed:
                raise asyncpg.exceptions.InterfaceError("pool is closed")
            while self._idle:
                conn = self._idle.pop()
                if not conn.is_closed():
                    return conn
                self._all.discard(conn)
            if self.get_size() < self._max_size:
                self._opening += 1
                return await self._open()
            # Full: wait in line. A released connection is handed to the first in line; None
            # means the room of a closed one, kept for this waiter (counted in _opening).
            waiter: asyncio.Future[asyncpg.Connection | None]
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                handed = await waiter
            except BaseException:
                if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                    given = waiter.result()  # handed over, and cancelled at once: pass it on
                    if given is None:
                        self._opening -= 1
                        self._room_freed()
                    else:
                        self._put(given, clean=True)
                raise
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
            if handed is not None:
                return handed
            if self._closed:  # the room kept for this waiter is not needed any more
                self._opening -= 1
                self._check_drained()
                continue
            return await self._open()

    async def _open(self) -> asyncpg.Connection:
        """Open a connection in the room already counted in ``_opening``."""
        try:
            conn = await self._connect()
        except BaseException:
            self._opening -= 1
            self._room_freed()  # the next in line tries (and fails fast while the server is down)
            raise
        self._opening -= 1
        self._all.add(conn)
        return conn

    def _put(self, conn: asyncpg.Connection, clean: bool) -> None:
        if clean and not conn.is_closed() and not conn.is_in_transaction():
            if self._closed or not self._hand_on(conn):
                self._idle.append(conn)
        elif conn.is_closed():
            self._all.discard(conn)
            self._room_freed()
        else:
            task = asyncio.get_running_loop().create_task(self._retire(conn))
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)
        self._check_drained()

    async def _retire(self, conn: asyncpg.Connection) -> None:
        try:
            await conn.close(timeout=_RETIRE_TIMEOUT_S)  # has a running statement cancelled first
        except Exception as exc:  # noqa: BLE001 - close() has cut the connection off
            log.info("pooled connection cut off", error=repr(exc))
        finally:
            self._all.discard(conn)
            self._room_freed()

    def _room_freed(self) -> None:
        """A connection fewer: give its room to the first in line, if any."""
        if not self._closed:
            self._hand_on(None)
        self._check_drained()

    def _hand_on(self, conn: asyncpg.Connection | None) -> bool:
        """Give ``conn`` (or the room to open one) to the first one waiting; False if none is."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                if conn is None:
                    self._opening += 1  # kept for this waiter: no newcomer takes it first
                waiter.set_result(conn)
                return True
        return False

    def _in_use(self) -> int:
        return len(self._all) - len(self._idle) + self._opening

    def _check_drained(self) -> None:
        if self._drained is not None and not self._drained.done() and not self._in_use():
            self._drained.set_result(None)

    async def fetch(
        self, query: str, *args: Any, timeout: float | None = None
    ) -> list[asyncpg.Record]:
        async with self.acquire() as conn:
            return await conn.fetch(query, *args, timeout=timeout)

    async def fetchrow(
        self, query: str, *args: Any, timeout: float | None = None
    ) -> asyncpg.Record | None:
        async with self.acquire() as conn:
            return await conn.fetchrow(query, *args, timeout=timeout)

    async def fetchval(
        self, query: str, *args: Any, column: int = 0, timeout: float | None = None
    ) -> Any:
        async with self.acquire() as conn:
            return await conn.fetchval(query, *args, column=column, timeout=timeout)

    async def execute(self, query: str, *args: Any, timeout: float | None = None) -> str:
        async with self.acquire() as conn:
            return await conn.execute(query, *args, timeout=timeout)

    async def close(self) -> None:
        """Refuse new acquires, wait for the connections in use to come back, close them all."""
        if not self._closed:
            self._closed = True
            self._drained = asyncio.get_running_loop().create_future()
            for waiter in self._waiters:
                if not waiter.done():
                    waiter.set_exception(asyncpg.exceptions.InterfaceError("pool is closed"))
            self._waiters.clear()
            self._check_drained()
        assert self._drained is not None
        await asyncio.shield(self._drained)
        idle, self._idle = self._idle, []
        self._all.difference_update(idle)
        await asyncio.gather(*(c.close() for c in idle), return_exceptions=True)


class _Acquired:
    __slots__ = ("_conn", "_pool")

    def __init__(self, pool: Pool) -> None:
        self._pool = pool
        self._conn: asyncpg.Connection | None = None

    async def __aenter__(self) -> asyncpg.Connection:
        self._conn = await self._pool._get()
        return self._conn

    async def __aexit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        conn, self._conn = self._conn, None
        assert conn is not None
        # cancelled or timed out mid-statement: asyncpg may still be cancelling it on the server
        clean = exc_type is None or not issubclass(exc_type, (asyncio.CancelledError, TimeoutError))
        self._pool._put(conn, clean)


async def create_pool(
    dsn: str,
    schema: str,
    min_size: int = 2,
    max_size: int = 10,
    server_settings: Mapping[str, str] | None = None,
) -> Pool:
    """``server_settings``: more settings for every connection (e.g. notify's sender pool)."""
    settings = {"search_path": schema, "application_name": schema, **(server_settings or {})}

    async def connect() -> asyncpg.Connection:
        conn = await asyncpg.connect(dsn, server_settings=settings)
        try:
            await _learn_array_types(conn)
        except BaseException:
            conn.terminate()
            raise
        return conn

    return await Pool(connect, min_size, max_size).start()


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
