from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from tests.support.infra import (
    create_database,
    create_namespace,
    delete_namespace,
    drop_database,
    dsn_for,
)


@pytest.fixture(scope="session")
async def database(infra: None) -> AsyncIterator[str]:
    """A fresh database for the integration tests; its DSN."""
    name = await create_database("ketanmu_it")
    yield dsn_for(name)
    await drop_database(name)


@pytest.fixture(scope="session")
async def ns(infra: None) -> AsyncIterator[str]:
    """This run's own topics (prefix + the contract's names), deleted afterwards."""
    prefix = f"it-{uuid.uuid4().hex[:8]}."
    await create_namespace(prefix)
    yield prefix
    await delete_namespace(prefix)
