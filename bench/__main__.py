"""``python -m bench`` (``make bench``): the whole pipeline under stepped load, next to raw Kafka
and PostgreSQL. See bench/README.md. Never fails on speed: exit 1 only if the run itself broke."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from bench import report
from bench.run import Options, Run, environment
from bench.stack import sweep_leftovers


def parse(argv: list[str] | None) -> Options:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--rates", default=None,
                   help="offered load steps, lifecycles per second (default 10,25,40,50,100,150;"
                        " --quick: 5,10)")
    p.add_argument("--step-seconds", type=float, default=None,
                   help="duration of each step (default 30; --quick: 3)")
    p.add_argument("--repeats", type=int, default=None,
                   help="how many times the 50/s step (the p99 target's) runs in a row; the "
                        "target is judged on every one (default 3; --quick: 1)")
    p.add_argument("--warmup-seconds", type=float, default=5.0, help="unreported warm-up at 10/s")
    p.add_argument("--idle-seconds", type=float, default=5.0, help="idle cost measured before load")
    p.add_argument("--drain-seconds", type=float, default=60.0,
                   help="after a step, wait at most this long for its lifecycles to finish")
    p.add_argument("--concurrency", type=int, default=64, help="HTTP requests in flight at most")
    p.add_argument("--partitions", type=int, default=6)
    p.add_argument("--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"))
    p.add_argument("--out", type=Path, default=Path("bench-results"), help="results folder root")
    p.add_argument("--quick", action="store_true",
                   help="a few seconds: two small steps, tiny baselines, no scale-out or profile")
    p.add_argument("--no-scale-out", dest="scale_out", action="store_false")
    p.add_argument("--scale-out", dest="scale_out", action="store_true")
    p.add_argument("--scale-rate", type=float, default=None,
                   help="offered load of the scale-out check (default: 30/s, or the highest"
                        " step that kept up if lower)")
    p.add_argument("--scale-seconds", type=float, default=20.0)
    p.add_argument("--no-profile", dest="profile", action="store_false")
    p.add_argument("--profile", dest="profile", action="store_true")
    p.add_argument("--profile-rate", type=float, default=None,
                   help="offered load while profiling (default: the highest step that kept up)")
    p.add_argument("--profile-seconds", type=float, default=20.0)
    p.add_argument("--profile-native", action="store_true", help="py-spy --native (pauses targets)")
    p.add_argument("--no-baselines", dest="baselines", action="store_false")
    p.add_argument("--baselines", dest="baselines", action="store_true")
    p.add_argument("--raw-rate", type=float, default=50.0, help="raw chain latency measured at this rate")
    p.add_argument("--raw-seconds", type=float, default=10.0)
    p.add_argument("--raw-burst", type=int, default=20000, help="raw chain throughput: messages")
    p.add_argument("--pg-seconds", type=float, default=5.0)
    p.add_argument("--pg-concurrency", type=int, default=8)
    p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                   help="extra environment for the services and the sandbox (repeatable), "
                        "e.g. --env KAFKA_BATCH_TIMEOUT_MS=20")
    p.add_argument("--keep", action="store_true", help="keep the database and topics afterwards")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.add_argument("--seed", type=int, default=None)
    p.set_defaults(scale_out=None, profile=None, baselines=None)
    a = p.parse_args(argv)
    quick = a.quick
    options = Options(
        rates=[float(r) for r in (a.rates or ("5,10" if quick else "10,25,40,50,100,150")).split(",")],
        step_s=a.step_seconds or (3.0 if quick else 30.0),
        repeats=max(1, a.repeats or (1 if quick else 3)),
        warmup_s=0.0 if quick else a.warmup_seconds,
        idle_s=1.0 if quick else a.idle_seconds,
        drain_s=a.drain_seconds,
        concurrency=a.concurrency,
        partitions=a.partitions,
        bootstrap=a.bootstrap,
        out=a.out,
        quick=quick,
        scale_out=a.scale_out if a.scale_out is not None else not quick,
        scale_rate=a.scale_rate,
        scale_s=a.scale_seconds,
        profile=a.profile if a.profile is not None else not quick,
        profile_rate=a.profile_rate,
        profile_s=a.profile_seconds,
        profile_native=a.profile_native,
        baselines=a.baselines if a.baselines is not None else True,
        raw_rate=a.raw_rate,
        raw_s=1.0 if quick else a.raw_seconds,
        raw_burst=500 if quick else a.raw_burst,
        pg_s=1.0 if quick else a.pg_seconds,
        pg_concurrency=a.pg_concurrency,
        env=dict(kv.split("=", 1) for kv in a.env),
        keep=a.keep,
        progress=a.progress and sys.stderr.isatty(),
        seed=a.seed,
    )
    return options


async def bench(options: Options) -> int:
    out_dir = options.out / time.strftime("%Y%m%d-%H%M%S")
    out_dir.mkdir(parents=True, exist_ok=True)
    print(f"benchmark results -> {out_dir}", flush=True)
    results: dict[str, Any] = {"environment": environment(options), "steps": [], "extra_steps": []}
    run = Run(options, out_dir)
    failed = False
    try:
        for line in await sweep_leftovers(options.bootstrap):
            print(line, flush=True)
        print("starting: database, topics, four services and the sandbox ...", flush=True)
        await run.setup()
        results["namespace"] = {"database": run.stack.database, "prefix": run.stack.prefix,
                                "ports": run.stack.system.ports if run.stack.system else {}}
        if options.warmup_s:
            results["warmup"] = await run.step("warm-up", 10.0, options.warmup_s)
        if options.idle_s:
            results["idle"] = await run.idle(options.idle_s)
        plan = report.step_plan(options.rates, options.repeats)
        for i, (label, rate) in enumerate(plan):
            step = await run.step(label, rate, options.step_s)
            results["steps"].append(step)
            report.save(results, out_dir)  # a run that breaks later still leaves its figures
            more = i + 1 < len(plan) or options.scale_out or options.profile
            if more and not step["drained"] and not await run.settle(10.0):
                await run.restart()
        kept = [s["offered_rate"] for s in results["steps"] if s["kept_up"]]
        sustained = max(kept, default=10.0)
        options.scale_rate = options.scale_rate or min(30.0, sustained)
        options.profile_rate = options.profile_rate or sustained
        if options.scale_out:
            results["scale_out"] = await run.scale_out()
            results["extra_steps"].append(results["scale_out"]["step"])
            report.save(results, out_dir)
        if options.profile:
            if not await run.settle(30.0):
                await run.restart()
            results["profile"] = await run.profile()
            results["extra_steps"].append(results["profile"]["step"])
        results["kafka_value_bytes_mean"] = run.tap.mean_value_size() if run.tap else None
    except Exception:  # noqa: BLE001 - report what was measured, then fail
        failed = True
        results["failure"] = traceback.format_exc()
        traceback.print_exc()
    finally:
        await run.teardown()
    if options.baselines and not failed:
        print("baselines: raw aiokafka chain, asyncpg transactions ...", flush=True)
        results["baselines"] = await run.baselines()
    if options.keep:
        run.stack.keep()
    else:
        try:
            await run.stack.destroy()
        except Exception as exc:  # noqa: BLE001
            print(f"cleanup failed: {exc!r}", file=sys.stderr)
    results["environment"]["loadavg_at_end"] = list(os.getloadavg())
    report.write(results, out_dir)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    import uvloop

    # aiokafka's retried metadata hiccups on fresh topics are noise here; errors still show
    logging.basicConfig(level=logging.ERROR)

    return uvloop.run(bench(parse(argv)))


if __name__ == "__main__":
    raise SystemExit(main())
