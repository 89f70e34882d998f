from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.support.infra import create_database, drop_database, dsn_for


@pytest.fixture(scope="session")
async def database(infra: None) -> AsyncIterator[str]:
    """A fresh database for the integration tests; its DSN."""
    name = await create_database("ketanmu_it")
    yield dsn_for(name)
    await drop_database(name)
