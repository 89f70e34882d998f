"""A few-second run of the benchmark (``python -m bench --quick``) so that it does not rot.

It checks that the run produced its report with sane fields, never how fast anything was: the
benchmark is not a test of speed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from deploy.local.system import ROOT, SERVICES
from tests.support.infra import KAFKA

pytestmark = pytest.mark.e2e


def test_quick_benchmark_writes_its_report(infra: None, tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--rates", "5", "--no-progress",
         "--drain-seconds", "120", "--out", str(tmp_path)],
        check=False,
        cwd=ROOT,
        env={**os.environ, "KAFKA_BOOTSTRAP_SERVERS": KAFKA},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (run_dir,) = tmp_path.iterdir()
    assert {"results.json", "report.txt", "chart.png"} <= {p.name for p in run_dir.iterdir()}
    results = json.loads((run_dir / "results.json").read_text())
    assert "failure" not in results

    (step,) = results["steps"]
    assert step["offered_rate"] == 5
    assert step["accepted"] > 0 and step["completed"] > 0, step["errors"]
    assert step["completed"] + step["incomplete"] == step["accepted"]
    assert step["shed"] == 0  # 5/s is far below what intake sheds at
    stage = step["stages_ms"]["accepted_to_delivered"]
    assert stage["n"] > 0 and 0 < stage["p50"] <= stage["p95"] <= stage["p99"] <= stage["max"]
    # the target's measure: every delivered lifecycle's partner time is known, and subtracted
    own = step["stages_ms"]["accepted_to_delivered_own"]
    assert own["n"] == stage["n"] and own["p50"] <= stage["p50"] and own["max"] <= stage["max"]
    for name in ("registered_to_printed", "printed_to_handed", "handed_to_delivered",
                 "event_to_whatsapp", "accepted_to_all_notified"):
        assert step["stages_ms"][name]["n"] > 0, name
    assert set(step["consumer_lag"]) == set(SERVICES)
    for name in (*SERVICES, "sandbox", "kafka", "postgres"):
        process = step["processes"][name]
        assert process["cpu_s"] >= 0 and process["rss_peak_mib"] > 0, (name, process)
    assert step["cpu_ms_per_lifecycle"]["ketanmu_services"] > 0
    assert step["postgres"]["xact_commit"] > 0
    assert len(step["loadavg_end"]) == 3
    assert isinstance(step["errors"]["http_and_robot"], dict)

    chain = results["baselines"]["kafka_chain"]
    assert chain["throughput"]["chains_per_s"] > 0 and chain["latency_at_rate"]["n"] > 0, chain
    assert all(p["tx_per_s"] > 0 for p in results["baselines"]["postgres"])
    assert "max_sustained_lifecycles_per_s" in results["conclusions"]
    report = (run_dir / "report.txt").read_text()
    assert "Targets" in report and "p99 own" in report
    assert not list((ROOT / ".local" / "bench-runs").glob("*.json"))  # cleaned up, record too
