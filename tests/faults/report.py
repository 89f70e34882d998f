"""The fault table: one row per scenario, printed at the end of the run and written to
``.local/faults-report.md`` (it goes into the closing note)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from tests.faults.scenario import Audit

STANDARD_CHECKS = "terminal; events once; WhatsApp once/recipient; bookings once; outboxes empty"


@dataclass
class Row:
    fault: str
    in_flight: int
    checks: str
    lost: int
    duplicated: int
    violations: int
    seconds: float
    passed: bool


ROWS: list[Row] = []


def record(fault: str, audit: Audit, extra_checks: str = "", passed: bool | None = None) -> None:
    checks = STANDARD_CHECKS + (f"; {extra_checks}" if extra_checks else "")
    ROWS.append(Row(
        fault=fault,
        in_flight=audit.requests,
        checks=checks,
        lost=sum(audit.lost.values()),
        duplicated=sum(audit.duplicated.values()),
        violations=sum(audit.violations.values()),
        seconds=audit.seconds,
        passed=audit.clean if passed is None else passed,
    ))


def markdown() -> str:
    lines = [
        f"Fault tests, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "",
        "| fault | requests in flight | checked | lost | duplicated | other violations | s | result |",
        "|---|---:|---|---:|---:|---:|---:|---|",
    ]
    for r in ROWS:
        lines.append(f"| {r.fault} | {r.in_flight} | {r.checks} | {r.lost} | {r.duplicated} | "
                     f"{r.violations} | {r.seconds:.0f} | {'pass' if r.passed else 'FAIL'} |")
    total = sum(r.in_flight for r in ROWS)
    lost, duplicated = sum(r.lost for r in ROWS), sum(r.duplicated for r in ROWS)
    lines += ["", f"{len(ROWS)} faults, {total} requests; lost {lost}, duplicated {duplicated}."]
    return "\n".join(lines)
