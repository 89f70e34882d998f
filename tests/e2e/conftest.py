"""The whole system as processes (four services + partner sandbox) on real Kafka and PostgreSQL.

Each test session gets its own database, its own consumer groups (started at the current end of
the topics) and its own ports, so it never disturbs a running ``make run``.
"""

from __future__ import annotations

import os
import socket
import sys
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from deploy.local.system import ROOT, SERVICES, System
from tests.support.infra import (
    KAFKA,
    create_database,
    create_namespace,
    delete_namespace,
    drop_database,
    dsn_for,
)


def free_ports(names: list[str]) -> dict[str, int]:
    socks = [socket.socket() for _ in names]
    for sock in socks:
        sock.bind(("127.0.0.1", 0))
    ports = {name: sock.getsockname()[1] for name, sock in zip(names, socks, strict=True)}
    for sock in socks:
        sock.close()
    return ports


@pytest.fixture(scope="session")
async def e2e_env(infra: None) -> AsyncIterator[dict[str, str]]:
    run = uuid.uuid4().hex[:8]
    database = await create_database("ketanmu_e2e")
    prefix = f"e2e-{run}."
    await create_namespace(prefix)
    yield {
        "DATABASE_URL": dsn_for(database),
        "KAFKA_BOOTSTRAP_SERVERS": KAFKA,
        "KAFKA_GROUP_PREFIX": prefix,
        "KAFKA_TOPIC_PREFIX": prefix,
        "SANDBOX_STEP_DELAY_MS": "100",
        "LOG_LEVEL": "INFO",
        "OUTBOX_POLL_INTERVAL_S": "1.0",
        # a reply claimed by a sender the tests kill is sent again after 5 s (30 s by default):
        # the applicant's later replies wait for it (services/intake/replies.py)
        "REPLY_CLAIM_S": "5",
    }
    if os.environ.get("KETANMU_KEEP_E2E_DB") != "1":  # keep it to debug a failure
        await drop_database(database)
        await delete_namespace(prefix)


@pytest.fixture(scope="session")
def system(e2e_env: dict[str, str]) -> Iterator[System]:
    run_dir = ROOT / ".local" / "e2e" / e2e_env["KAFKA_TOPIC_PREFIX"].strip(".")
    ports = free_ports(["sandbox", *SERVICES])
    system = System(ports=ports, env=e2e_env, run_dir=run_dir, python=sys.executable)
    try:
        system.start_all(timeout_s=90)
        yield system
    finally:
        system.stop_all()
