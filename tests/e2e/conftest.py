"""The whole system as processes (four services + partner sandbox) on real Kafka and PostgreSQL.

Each test session gets its own database, its own consumer groups (started at the current end of
the topics) and its own ports, so it never disturbs a running ``make run``.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from deploy.local.system import ROOT, SERVICES, System
from tests.support.infra import KAFKA, create_database, drop_database, dsn_for, seed_group_at_end

E2E_PORTS = {"intake": 18001, "printing": 18002, "courier": 18003, "notify": 18004, "sandbox": 18090}


@pytest.fixture(scope="session")
async def e2e_env(infra: None) -> AsyncIterator[dict[str, str]]:
    run = uuid.uuid4().hex[:8]
    database = await create_database("ketanmu_e2e")
    prefix = f"e2e-{run}-"
    for service in SERVICES:
        await seed_group_at_end(prefix + service)
    yield {
        "DATABASE_URL": dsn_for(database),
        "KAFKA_BOOTSTRAP_SERVERS": KAFKA,
        "KAFKA_GROUP_PREFIX": prefix,
        "SANDBOX_STEP_DELAY_MS": "100",
        "LOG_LEVEL": "INFO",
        "OUTBOX_POLL_INTERVAL_S": "1.0",
    }
    if os.environ.get("KETANMU_KEEP_E2E_DB") != "1":  # keep it to debug a failure
        await drop_database(database)


@pytest.fixture(scope="session")
def system(e2e_env: dict[str, str]) -> Iterator[System]:
    run_dir = ROOT / ".local" / "e2e" / e2e_env["KAFKA_GROUP_PREFIX"].strip("-")
    system = System(ports=dict(E2E_PORTS), env=e2e_env, run_dir=run_dir, python=sys.executable)
    try:
        system.start_all(timeout_s=90)
        yield system
    finally:
        system.stop_all()
