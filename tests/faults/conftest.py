"""The fault tier: the whole system as processes on its own Kafka and PostgreSQL, broken on purpose.

One system serves every scenario (tests/faults/test_faults.py, in file order); each scenario pushes
its own batch of requests and audits only those. Retries, claims and timeouts are shortened so a
fault heals within a scenario. At the end the fault table is printed and written to
``.local/faults-report.md``.
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

import tests.support.infra as support
from deploy.local.system import ROOT, SERVICES, System
from tests.e2e.conftest import free_ports
from tests.faults import report
from tests.faults.infra import FaultInfra
from tests.faults.meta import MetaWebhook
from tests.faults.scenario import Context

# Short enough that a fault heals within a scenario; never shorter than the faults themselves.
FAULT_TIER_ENV = {
    "SANDBOX_STEP_DELAY_MS": "100",
    "SANDBOX_RETRY_CAP_MS": "1000",
    "SANDBOX_CALLBACK_TIMEOUT_S": "3",
    "LOG_LEVEL": "INFO",
    "OUTBOX_POLL_INTERVAL_S": "1.0",
    "PARTNER_TIMEOUT_S": "3",
    "BOOKING_RETRY_START_S": "0.5",
    "BOOKING_RETRY_CAP_S": "2",
    "BOOKING_CLAIM_S": "10",
    "WHATSAPP_TIMEOUT_S": "3",
    "SEND_RETRY_START_S": "0.5",
    "SEND_RETRY_CAP_S": "2",
    "SEND_MAX_ATTEMPTS": "8",  # about 12 s of a failing Cloud API, then dead-lettered
    "SEND_CLAIM_S": "10",
    "SEND_CONFIRM_WAIT_S": "20",
}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "faults: breaks the running system on purpose")


@pytest.fixture(scope="package")
def fault_infra() -> Iterator[FaultInfra]:
    infra = FaultInfra.from_env()
    infra.up()
    # tests.support.infra's helpers read these module globals at call time
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(support, "KAFKA", infra.kafka)
        patch.setattr(support, "ADMIN_DSN", infra.admin_dsn)
        yield infra


@pytest.fixture(scope="package")
async def faults(fault_infra: FaultInfra) -> AsyncIterator[Context]:
    run = uuid.uuid4().hex[:8]
    database = await support.create_database("ketanmu_faults")
    prefix = f"faults-{run}."
    await support.create_namespace(prefix)
    env = {
        "DATABASE_URL": support.dsn_for(database),
        "KAFKA_BOOTSTRAP_SERVERS": fault_infra.kafka,
        "KAFKA_GROUP_PREFIX": prefix,
        "KAFKA_TOPIC_PREFIX": prefix,
        **FAULT_TIER_ENV,
    }
    system = System(ports=free_ports(["sandbox", *SERVICES]), env=env,
                    run_dir=ROOT / ".local" / "faults" / prefix.strip("."), python=sys.executable)
    meta = MetaWebhook(system.url("sandbox"), system.url("notify"))
    try:
        await asyncio.to_thread(system.start_all, 120)
        await meta.start()
        async with httpx.AsyncClient(timeout=10) as http:
            yield Context(system=system, infra=fault_infra, dsn=env["DATABASE_URL"], meta=meta,
                          http=http)
    finally:
        await meta.stop()
        await asyncio.to_thread(system.stop_all)
        await support.drop_database(database)
        await support.delete_namespace(prefix)


@pytest.fixture
async def ctx(faults: Context) -> AsyncIterator[Context]:
    """Each scenario starts with every process up and no partner outage."""
    await _heal(faults)
    yield faults
    await _heal(faults)


async def _heal(ctx: Context) -> None:
    for target in ("jnt", "pos", "whatsapp"):
        await ctx.http.post(f"{ctx.system.url('sandbox')}/sandbox/faults",
                            json={"target": target, "mode": "ok"})
    ctx.meta.chaos = False
    dead = [name for name in SERVICES if ctx.system.pid(name) is None]
    for name in dead:
        ctx.system.start(name)
    if dead:
        await asyncio.to_thread(ctx.system.wait_healthy, dead, 90)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not report.ROWS:
        return
    text = report.markdown()
    terminalreporter.write_sep("=", "fault table")
    terminalreporter.write_line(text)
    path = ROOT / ".local" / "faults-report.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")
    terminalreporter.write_line(f"(written to {path.relative_to(ROOT)})")
