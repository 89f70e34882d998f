"""Test tiers: tests/unit (no I/O), tests/integration (real Kafka + PostgreSQL),
tests/e2e (the whole system as processes). ``make test`` starts Kafka and PostgreSQL first."""

from __future__ import annotations

import socket

import pytest

from tests.support.infra import ADMIN_DSN, KAFKA


def _reachable(hostport: str) -> bool:
    host, _, port = hostport.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=2):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def infra() -> None:
    """Fail (not skip) with a clear message: these tests are part of the suite."""
    pg = ADMIN_DSN.split("@")[-1].split("/")[0]
    missing = [name for name, hp in (("Kafka", KAFKA), ("PostgreSQL", pg)) if not _reachable(hp)]
    if missing:
        pytest.fail(f"{' and '.join(missing)} not reachable: run `make infra-up` (or `make test`)")
