"""The report: a terminal table, ``results.json`` and ``chart.png`` (throughput and p99 vs load)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from deploy.local.system import SERVICES

TARGET_RATE = 100.0
TARGET_P99_RATE = 50.0
TARGET_P99_MS = 1000.0
TARGET_RSS_MIB = 200.0


def _num(value: Any, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:,.{digits}f}"


def _p(stage: dict[str, Any], q: str) -> float | None:
    return stage.get(q) if stage.get("n") else None


def _nearest(steps: list[dict[str, Any]], rate: float) -> dict[str, Any] | None:
    return min(steps, key=lambda s: abs(s["offered_rate"] - rate), default=None)


def step_plan(rates: list[float], repeats: int) -> list[tuple[str, float]]:
    """(label, rate) of every step: the one at the p99 target's rate ``repeats`` times in a row
    (``50/s``, ``50/s #2``, ...), the others once."""
    plan = []
    for rate in rates:
        times = repeats if rate == TARGET_P99_RATE else 1
        plan += [(f"{rate:g}/s" + (f" #{k + 1}" if k else ""), rate) for k in range(times)]
    return plan


def _by_rate(steps: list[dict[str, Any]]) -> list[tuple[float, list[dict[str, Any]]]]:
    """The steps grouped by offered rate, in order of rate."""
    groups: dict[float, list[dict[str, Any]]] = {}
    for step in steps:
        groups.setdefault(step["offered_rate"], []).append(step)
    return sorted(groups.items())


def _median_step(group: list[dict[str, Any]], key: str) -> dict[str, Any]:
    """The step whose p99 of ``key`` is the median of ``group``'s (the lower one of an even
    count; a step without that figure counts as the worst)."""
    def p99(step: dict[str, Any]) -> float:
        value = _p(step["stages_ms"].get(key, {}), "p99")
        return math.inf if value is None else value

    ranked = sorted(group, key=p99)
    return ranked[(len(ranked) - 1) // 2]


def _service_rss(step: dict[str, Any]) -> dict[str, float]:
    return {name: p["rss_peak_mib"] for name, p in step["processes"].items()
            if name.split("#")[0] in SERVICES}


def conclusions(results: dict[str, Any]) -> dict[str, Any]:
    """Targets and ratios against the baselines."""
    steps = results.get("steps", [])
    out: dict[str, Any] = {}
    kept = [s for s in steps if s["kept_up"]]
    best = max(kept, key=lambda s: s["completed_per_s"], default=None)
    peak = max(steps, key=lambda s: s["completed_per_s"], default=None)
    out["max_sustained_lifecycles_per_s"] = best["completed_per_s"] if best else 0.0
    out["max_sustained_at_offered"] = best["offered_rate"] if best else None
    out["peak_completed_per_s"] = peak["completed_per_s"] if peak else 0.0
    at_target = [s for s in steps if s["offered_rate"] >= TARGET_RATE]
    out["target_100_per_s_zero_errors"] = {
        "met": any(s["kept_up"] for s in at_target),
        "steps": {s["label"]: {"completed_per_s": s["completed_per_s"], "errors": s["error_total"],
                               "kept_up": s["kept_up"]} for s in at_target},
    }
    at50 = _nearest(steps, TARGET_P99_RATE)
    if at50 is not None and abs(at50["offered_rate"] - TARGET_P99_RATE) > 0.2 * TARGET_P99_RATE:
        at50 = None  # no step near 50/s: not measured
    if at50 is not None:
        # every step at that rate (--repeats): met only if each one's p99 is under 1 s. As the
        # target says, the partners' own delay excluded (bench/stats.py, partner_seconds).
        group = [s for s in steps if s["offered_rate"] == at50["offered_rate"]]
        own = "accepted_to_delivered_own"
        each = {s["label"]: _p(s["stages_ms"].get(own, {}), "p99") for s in group}
        at50 = _median_step(group, own)
        under = sum(1 for v in each.values() if v is not None and v < TARGET_P99_MS)
        out["target_p99_delivered_under_1s_at_50"] = {
            "step": at50["label"], "p99_ms": each[at50["label"]],  # the median step's
            "p99_ms_partners_included": _p(at50["stages_ms"]["accepted_to_delivered"], "p99"),
            "p99_ms_each": each, "steps_under_1s": under,
            "met": under == len(group)}
    rss: dict[str, float] = {}
    for step in [*steps, *(results.get("extra_steps") or [])]:
        for name, mib in _service_rss(step).items():
            rss[name] = max(rss.get(name, 0.0), mib)
    out["target_rss_under_200mib"] = {
        "peak_mib": rss, "met": bool(rss) and all(v < TARGET_RSS_MIB for v in rss.values())}

    base = results.get("baselines") or {}
    chain = base.get("kafka_chain") or {}
    ratios: dict[str, Any] = {}
    fastest = best or peak  # the most lifecycles per second
    # the cheapest lifecycle: per-lifecycle costs of an overloaded step count work never finished
    costed = [s for s in steps if s["cpu_ms_per_lifecycle"]["system_total"]]
    cheapest = min(costed, key=lambda s: s["cpu_ms_per_lifecycle"]["system_total"], default=None)
    if cheapest is not None:
        out["cpu_ms_per_lifecycle"] = {"step": cheapest["label"], **cheapest["cpu_ms_per_lifecycle"]}
    if fastest and chain.get("throughput"):
        raw = chain["throughput"]["chains_per_s"]
        ratios["raw_chain_per_s_over_ketanmu"] = round(
            raw / max(fastest["completed_per_s"], 1e-9), 1)
    if cheapest and chain.get("throughput") and chain["throughput"]["cpu_ms_per_chain"]:
        ratios["ketanmu_cpu_ms_over_raw_chain"] = round(
            cheapest["cpu_ms_per_lifecycle"]["system_total"]
            / chain["throughput"]["cpu_ms_per_chain"], 1)
    if chain.get("latency_at_rate", {}).get("n"):
        for label, step in (("at_50", at50), ("lowest_step", steps[0] if steps else None)):
            if step is None:
                continue
            ours = step["stages_ms"]["accepted_to_delivered"]
            for q in ("p50", "p99"):
                if _p(ours, q) is not None and chain["latency_at_rate"][q] > 0:
                    ratios[f"latency_{q}_{label}_ketanmu_over_raw_chain"] = round(
                        ours[q] / chain["latency_at_rate"][q], 1)
    pg = [p for p in base.get("postgres", []) if "tx_per_s" in p]
    if cheapest and pg:
        raw_tx = max(p["tx_per_s"] for p in pg)
        counters = cheapest["postgres"]
        ratios["postgres_raw_tx_per_s"] = raw_tx
        per = counters.get("xact_commit_per_lifecycle")
        if per:
            ratios["ketanmu_db_commits_per_lifecycle"] = per
            ratios["ketanmu_rows_written_per_lifecycle"] = counters.get("rows_written_per_lifecycle")
            # a floor: read-only commits cost less than a single-row write
            ratios["lifecycles_per_s_if_each_commit_cost_a_raw_tx"] = round(raw_tx / per, 1)
    out["ratios"] = ratios
    return out


def why_not_kept_up(step: dict[str, Any]) -> str:
    """The first reason a step did not keep up (bench/run.py, ``kept_up``), as the table says it."""
    if step["error_total"]:
        return "errors"
    if step.get("shed"):
        return f"shed {step['shed']} with 429"
    if (step["drained"] and not step.get("concurrency_bound_reached")
            and step["completed_per_s"] >= 0.9 * step["achieved_rate"]
            and step["achieved_rate"] >= 0.98 * step["offered_rate"]):
        # the system finished everything at the offered rate; the generator (on the same two
        # cores) sent more than 1% of its requests over 100 ms late
        return f"{step['late_sends']} of {step['planned']} sends late"
    return "fell behind"


def table(results: dict[str, Any]) -> str:
    steps = [*results.get("steps", []), *(results.get("extra_steps") or [])]
    lines = []
    head = (f"{'step':>18} {'achieved':>8} {'done/s':>7} {'p50 dlv':>8} {'p99 dlv':>8} "
            f"{'p99 own':>8} {'p99 all':>8} {'lag max':>8} {'errors':>6} {'CPUms/lc':>9} "
            f"{'+infra':>7} {'maxRSS':>7} {'load1':>6}")
    lines += [("Lifecycles (accepted -> delivered on Kafka = dlv; the same without the partners' own"
               " delay = own; -> every WhatsApp sent = all; ms)"),
              head, "-" * len(head)]
    for s in steps:
        dlv = s["stages_ms"]["accepted_to_delivered"]
        own = s["stages_ms"].get("accepted_to_delivered_own", {})
        done = s["stages_ms"]["accepted_to_all_notified"]
        lag = max((v["max"] for v in s["consumer_lag"].values()), default=0)
        rss = max(_service_rss(s).values(), default=0)
        cpu = s["cpu_ms_per_lifecycle"]
        lines.append(
            f"{s['label']:>18} {_num(s['achieved_rate'], 1):>8} {_num(s['completed_per_s'], 1):>7} "
            f"{_num(_p(dlv, 'p50')):>8} {_num(_p(dlv, 'p99')):>8} {_num(_p(own, 'p99')):>8} "
            f"{_num(_p(done, 'p99')):>8} "
            f"{_num(lag):>8} {s['error_total']:>6} {_num(cpu['ketanmu_services'], 1):>9} "
            f"{_num(cpu['system_total'], 1):>7} {_num(rss, 0):>7} {s['loadavg_end'][0]:>6.2f}"
            + ("" if s["kept_up"] else f"  ({why_not_kept_up(s)})"))
    lines += ["", "Stages p50 / p95 / p99 (ms)"]
    names = ["http_register", "accepted_to_registered", "registered_to_printed", "printed_to_handed",
             "handed_to_delivered", "event_to_whatsapp"]
    lines.append(f"{'step':>18} " + " ".join(f"{n[:22]:>22}" for n in names))
    for s in steps:
        cells = []
        for n in names:
            st = s["stages_ms"][n]
            cells.append(f"{_num(_p(st, 'p50'))}/{_num(_p(st, 'p95'))}/{_num(_p(st, 'p99'))}"
                         if st.get("n") else "-")
        lines.append(f"{s['label']:>18} " + " ".join(f"{c:>22}" for c in cells))
    lines += ["", "Processes per step: CPU cores used (peak RSS MiB)"]
    names = sorted({n for s in steps for n in s["processes"]})
    lines.append(f"{'step':>18} " + " ".join(f"{n[:15]:>15}" for n in names))
    for s in steps:
        cells = [f"{p['cores']:.2f} ({p['rss_peak_mib']:.0f})" if (p := s["processes"].get(n)) else "-"
                 for n in names]
        lines.append(f"{s['label']:>18} " + " ".join(f"{c:>15}" for c in cells))
    lines += postgres_split_lines(steps)
    idle = results.get("idle")
    if idle:
        lines += ["", "Idle (no load), CPU cores: " + ", ".join(
            f"{n} {p['cores']:.3f}" for n, p in idle["processes"].items())]
    lines += host_lines(results, steps)
    lines += ["", *baseline_lines(results), "", *target_lines(results)]
    scale = results.get("scale_out")
    if scale:
        c = scale["check"]
        lines += ["", (f"Scale-out (2x printing, 2x notify): {'OK' if c['ok'] else 'FAILED'}: "
                  f"{c['completed']}/{c['lifecycles']} lifecycles, events applied per instance "
                  f"{c['events_applied_during_phase']}, duplicate messages {c['duplicate_messages']}, "
                  f"missing {c['missing_messages']}, printed twice {c['requests_printed_twice']}, "
                  f"numbers reused {c['numbers_used_twice']}, members {c['group_members']}")]
    return "\n".join(lines)


def postgres_split_lines(steps: list[dict[str, Any]]) -> list[str]:
    """PostgreSQL's CPU per step, split by the service its backends work for (their
    ``application_name``; bench/observe.py ``ProcSampler.labels``)."""
    split = [(s["label"], by) for s in steps
             if (by := s.get("processes", {}).get("postgres", {}).get("by"))]
    if not split:
        return []
    services = sorted({k for _, by in split for k in by})
    lines = ["", "PostgreSQL's backends by the service they work for: CPU cores",
             f"{'step':>18} " + " ".join(f"{n[:15]:>15}" for n in services)]
    for label, by in split:
        lines.append(f"{label:>18} " + " ".join(
            f"{by[n]:>15.2f}" if n in by else f"{'-':>15}" for n in services))
    return lines


def host_lines(results: dict[str, Any], steps: list[dict[str, Any]]) -> list[str]:
    """How fast the host was: a fixed loop's CPU ms (bench/observe.py, ``speed_probe_ms``)."""
    start = results.get("environment", {}).get("host_probe_ms_at_start")
    idle = (results.get("idle") or {}).get("host_probe", {})
    probed = [(s["label"], s["host_probe"]) for s in steps if s.get("host_probe", {}).get("n")]
    if start is None and not probed:
        return []
    cells = [f"before the run {start:.2f}"] if start is not None else []
    cells += [f"{label} {p['median_ms']:.2f} ({p['p10_ms']:.2f}-{p['p90_ms']:.2f})"
              for label, p in ([("idle", idle)] if idle.get("n") else []) + probed]
    return ["", ("Host speed: CPU ms of a fixed loop, median (p10-p90) of one probe a second; higher"
                 " is slower cores (other tenants on the host; a little our own load): compare runs"
                 " at a similar speed"),
            *_rows(cells, 100)]


def _rows(cells: list[str], width: int) -> list[str]:
    """``cells`` joined by commas, a new indented line before one would pass ``width``."""
    rows: list[str] = []
    for cell in cells:
        if rows and len(rows[-1]) + len(cell) + 2 <= width:
            rows[-1] += f", {cell}"
        else:
            rows.append(f"  {cell}")
    return rows


def baseline_lines(results: dict[str, Any]) -> list[str]:
    base = results.get("baselines")
    if not base:
        return []
    lines = ["Baselines (same machine, same run)"]
    chain = base.get("kafka_chain", {})
    if "error" in chain:
        lines.append(f"  raw Kafka 5-hop chain: {chain['error']}")
    elif chain:
        t, lat = chain["throughput"], chain["latency_at_rate"]
        lines.append(f"  raw aiokafka 5-hop chain ({chain['message_bytes']} B): {t['chains_per_s']:,.0f} "
                     f"chains/s flat out, {t['cpu_ms_per_chain']} CPU-ms/chain (hops+Kafka); at "
                     f"{lat['rate']:g}/s p50 {_num(lat.get('p50'), 1)} ms p99 {_num(lat.get('p99'), 1)} ms")
    for pg in base.get("postgres", []):
        if "error" in pg:
            lines.append(f"  asyncpg x{pg['concurrency']}: {pg['error']}")
        else:
            lines.append(f"  asyncpg single-row committed transactions x{pg['concurrency']}: "
                         f"{pg['tx_per_s']:,.0f} tx/s (client {pg['client_cpu_ms_per_tx']} + "
                         f"postgres {pg['postgres_cpu_ms_per_tx']} CPU-ms/tx)")
    ratios = results.get("conclusions", {}).get("ratios", {})
    if ratios:
        lines.append("  ratios: " + ", ".join(f"{k} {v}" for k, v in ratios.items()))
    return lines


def target_lines(results: dict[str, Any]) -> list[str]:
    c = results.get("conclusions", {})
    if not c:
        return []

    def mark(ok: bool) -> str:
        return "met" if ok else "NOT met"

    lines = ["Targets (reported, never failed on)"]
    t = c["target_100_per_s_zero_errors"]
    lines.append(f"  >= 100 lifecycles/s sustained, zero errors: {mark(t['met'])} (max sustained "
                 f"{c['max_sustained_lifecycles_per_s']}/s; peak {c['peak_completed_per_s']}/s)")
    if "target_p99_delivered_under_1s_at_50" in c:
        t = c["target_p99_delivered_under_1s_at_50"]
        each = t.get("p99_ms_each") or {t["step"]: t["p99_ms"]}
        of = (f"{t.get('steps_under_1s', int(t['met']))} of {len(each)} steps under 1 s: "
              + ", ".join(f"{_num(v)}" for v in each.values()) + " ms; " if len(each) > 1 else "")
        lines.append(f"  p99 accepted -> delivered < 1 s at 50/s, the partners' own delay excluded: "
                     f"{mark(t['met'])} ({of}{t['step']}: {_num(t['p99_ms'])} ms; with the "
                     f"partners' delay {_num(t.get('p99_ms_partners_included'))} ms)")
    t = c["target_rss_under_200mib"]
    lines.append(f"  every service < 200 MiB RSS: {mark(t['met'])} ("
                 + ", ".join(f"{k} {v:.0f}" for k, v in t["peak_mib"].items()) + ")")
    return lines


def chart(results: dict[str, Any], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    steps = results.get("steps", [])
    if not steps:
        return False
    groups = _by_rate(steps)
    offered = [rate for rate, _ in groups]
    # one point per rate (a repeated step: its median one), the repeats' own points beside it
    medians = [_median_step(group, "accepted_to_delivered_own") for _, group in groups]
    repeated = [s for _, group in groups if len(group) > 1 for s in group]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8))
    left.plot(offered, [s["completed_per_s"] for s in medians], "o-", label="completed lifecycles/s")
    left.plot(offered, offered, "--", color="grey", label="offered")
    left.set_xlabel("offered load (lifecycles/s)")
    left.set_ylabel("lifecycles/s")
    left.set_title("Throughput")
    left.legend()
    left.grid(alpha=0.3)
    for key, label, color in (("accepted_to_delivered", "accepted -> delivered (Kafka)", "C0"),
                              ("accepted_to_delivered_own", "the same, partners' delay excluded",
                               "C2"),
                              ("accepted_to_all_notified", "accepted -> every WhatsApp sent", "C1")):
        for q, style in (("p99", "o-"), ("p50", "s:")):
            ys = [_p(s["stages_ms"].get(key, {}), q) for s in medians]
            right.plot(offered, [y if y is not None else float("nan") for y in ys], style,
                       color=color, label=f"{q} {label}")
        if repeated and key == "accepted_to_delivered_own":
            right.plot([s["offered_rate"] for s in repeated],
                       [_p(s["stages_ms"].get(key, {}), "p99") or float("nan") for s in repeated],
                       "x", color=color, label="p99 of each repeated step")
    right.axhline(TARGET_P99_MS, color="red", linewidth=0.8, linestyle="--", label="1 s target")
    right.set_yscale("log")
    right.set_xlabel("offered load (lifecycles/s)")
    right.set_ylabel("latency (ms)")
    right.set_title("Latency")
    right.legend(fontsize=8)
    right.grid(alpha=0.3, which="both")
    load = results.get("environment", {}).get("loadavg_at_start", [])
    fig.suptitle(f"Ketanmu pipeline benchmark, {results.get('environment', {}).get('started_at', '')}"
                 f" ({results.get('environment', {}).get('cpus')} CPUs, load at start {load})",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def save(results: dict[str, Any], out_dir: Path) -> None:
    (out_dir / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")


def write(results: dict[str, Any], out_dir: Path) -> None:
    results["conclusions"] = conclusions(results)
    results["chart"] = chart(results, out_dir / "chart.png")
    save(results, out_dir)
    text = table(results)
    (out_dir / "report.txt").write_text(text + "\n")
    print(text)
    print(f"\nresults: {out_dir}/results.json, report.txt" + (", chart.png" if results["chart"] else ""))


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.report bench-results/<run>/results.json``: the table, chart and
    conclusions again from a run's figures (after a change to the report)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m bench.report")
    parser.add_argument("results", type=Path)
    args = parser.parse_args(argv)
    write(json.loads(args.results.read_text()), args.results.parent)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
