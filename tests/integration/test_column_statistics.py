"""Columns whose statistics are off (``SET STATISTICS 0``: ANALYZE skips them) are payload only.

Each service's migrations turn ANALYZE off for columns no query filters, joins or sorts on (names,
addresses, JSON, message text), because autovacuum re-analyses busy tables every round. An index
is the surest sign a column is filtered on: none may use a column whose statistics are off. (A
column filtered without an index, such as ``notifications.wa_status``, is not caught here: the
migrations list each column by hand, and a reviewer checks the list against the queries.)
"""

from __future__ import annotations

import uuid
from pathlib import Path

import asyncpg
import pytest

from shared.db.pool import migrate

pytestmark = pytest.mark.integration

ROOT = Path(__file__).parents[2]
SERVICES = ("intake", "printing", "courier", "notify")

# (table, column) of every column an index of the schema uses: keys, expressions and predicates
_INDEXED = """
SELECT DISTINCT c.relname AS table_name, a.attname AS column_name
FROM pg_index i
JOIN pg_class c ON c.oid = i.indrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
WHERE n.nspname = $1
  AND (a.attnum = ANY (i.indkey::int2[])
       OR pg_get_expr(i.indpred, i.indrelid) ~ ('\\m' || a.attname || '\\M')
       OR pg_get_expr(i.indexprs, i.indrelid) ~ ('\\m' || a.attname || '\\M'))
"""

_OFF = """
SELECT c.relname AS table_name, a.attname AS column_name
FROM pg_attribute a
JOIN pg_class c ON c.oid = a.attrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = $1 AND c.relkind = 'r' AND a.attnum > 0 AND NOT a.attisdropped
  AND a.attstattarget = 0
"""


@pytest.mark.parametrize("service", SERVICES)
async def test_no_index_uses_a_column_whose_statistics_are_off(database: str, service: str) -> None:
    schema = f"stats_{service}_{uuid.uuid4().hex[:6]}"
    await migrate(database, schema, ROOT / "services" / service / "migrations")
    conn = await asyncpg.connect(database)
    try:
        off = {(r["table_name"], r["column_name"]) for r in await conn.fetch(_OFF, schema)}
        indexed = {(r["table_name"], r["column_name"]) for r in await conn.fetch(_INDEXED, schema)}
        await conn.execute(f"DROP SCHEMA {schema} CASCADE")
    finally:
        await conn.close()
    assert off, f"{service}: no column has its statistics off (did the migration run?)"
    assert not off & indexed, sorted(off & indexed)
