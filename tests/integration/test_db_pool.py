"""shared.db.pool: a pooled connection knows every array type our statements bind from the start."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from shared.db.pool import ARRAY_TYPES, create_pool

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
            conn.add_query_logger(lambda record: queries.append(record.query))
            for type_name in ARRAY_TYPES:
                assert await conn.fetchval(f"SELECT $1::{type_name}[]", []) == []
            assert not [q for q in queries if "typeinfo" in q]
            assert queries  # the logger did see the statements
    finally:
        await pool.close()
