"""One benchmark run: start the system, drive the steps, check scale-out, profile, baselines."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import platform
import statistics
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import psutil
from tqdm import tqdm

from bench import baselines, profiling, stats
from bench.load import Applicants, Generator, Lifecycle, OperatorRobot
from bench.observe import (
    KafkaTap,
    LagSampler,
    ProcSampler,
    loadavg,
    pg_counters,
    probe_summary,
    speed_probe_ms,
)
from bench.rawhttp import RawHttp
from bench.stack import Stack, kafka_pid, postgres_pids
from deploy.local.system import SERVICES
from shared.contracts import topics
from shared.gc_tuning import settle_gc

KETANMU = set(SERVICES)


@dataclass
class Options:
    rates: list[float]
    step_s: float = 30.0
    # the step at the p99 target's rate (50/s) runs this many times in a row: one 30 s step's p99
    # swings 0.8-1.7 s on this machine, so the target is judged on all of them
    repeats: int = 1
    warmup_s: float = 5.0
    idle_s: float = 5.0
    drain_s: float = 60.0
    concurrency: int = 64
    partitions: int = 6
    bootstrap: str = "127.0.0.1:9092"
    out: Path = Path("bench-results")
    quick: bool = False
    scale_out: bool = True
    scale_rate: float | None = None  # None: chosen from the steps
    scale_s: float = 20.0
    profile: bool = True
    profile_rate: float | None = None
    profile_s: float = 20.0
    profile_native: bool = False
    baselines: bool = True
    raw_rate: float = 50.0
    raw_s: float = 10.0
    raw_burst: int = 20000
    pg_s: float = 5.0
    pg_concurrency: int = 8
    env: dict[str, str] = field(default_factory=dict)
    keep: bool = False
    progress: bool = True
    seed: int | None = None


class Run:
    def __init__(self, options: Options, out_dir: Path) -> None:
        self.o = options
        self.out_dir = out_dir
        self.stack = Stack(bootstrap=options.bootstrap, run_dir=out_dir / "logs",
                           partitions=options.partitions, env_overrides=options.env)
        self.http = RawHttp(max_connections_per_host=options.concurrency)
        self.ledger: dict[str, Lifecycle] = {}
        # the ledger indexed as it fills, so that what runs every second while load runs costs
        # what is new, not what is there: a scan of 18,000 lifecycles a second stalled the
        # generator for 100-200 ms a second late in a 180 s step at 100/s
        self._step_lives: dict[str, list[Lifecycle]] = {}
        self._by_wa: dict[str, Lifecycle] = {}
        self.errors: Counter[str] = Counter()
        self.message_ids: set[str] = set()
        self._messages_since = 0.0
        self.tap: KafkaTap | None = None
        self.lag: LagSampler | None = None
        self.procs = ProcSampler()
        self.admin_conn: asyncpg.Pool | None = None  # a pool: samplers and steps query at once
        self.backlog: dict[str, int] = {}
        self.results: dict[str, Any] = {}
        self._pg_pids: dict[str, list[int]] = {}
        self._kafka_pid: int | None = None
        self.restarts = 0

    # --- set-up ---------------------------------------------------------------------------------

    async def setup(self) -> None:
        self.applicants = Applicants(self.o.seed)
        self.procs.refresh = self._processes
        await self._open_stack()
        await self.procs.start()

    async def _open_stack(self) -> None:
        await self.stack.create()
        await asyncio.to_thread(self.stack.start)
        self.admin_conn = await asyncpg.create_pool(
            self.stack.dsn, min_size=1, max_size=3,
            server_settings={"application_name": "ketanmu-bench"})
        self.tap = KafkaTap(self.o.bootstrap, self.stack.prefix,
                            [*topics.EVENT_TOPICS, *(topics.dead_letter_topic(s) for s in SERVICES)])
        await self.tap.start()
        self.lag = LagSampler(self.o.bootstrap, {s: self.stack.group(s) for s in SERVICES})
        await self.lag.start()
        self.procs.track(await self._processes())
        assert self.stack.system is not None
        self.generator = Generator(self.http, self.stack.system.url("intake"), self.applicants,
                                   self.ledger, self.errors, self.o.concurrency)
        self.generator.on_accept.append(self._index)
        self.robot = OperatorRobot(self.http, [self.stack.system.url("printing")], self.errors)
        await self.robot.start()

    def _index(self, request_id: str) -> None:
        life = self.ledger[request_id]
        self._step_lives.setdefault(life.step, []).append(life)
        self._by_wa[life.wa_id] = life

    def lives(self, label: str) -> list[Lifecycle]:
        """The lifecycles a step's generator got accepted, in order."""
        return self._step_lives.get(label, [])

    async def _close_stack(self) -> None:
        for part in (getattr(self, "robot", None), self.tap, self.lag):
            if part is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(part.stop(), 15)
        await asyncio.to_thread(self.stack.stop)
        if self.admin_conn is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.admin_conn.close(), 10)
            self.admin_conn = None

    async def restart(self) -> None:
        """A fresh system (new database, topics, processes): what an unfinished backlog left
        behind must not be measured as the next phase's work."""
        print("  (backlog not drained: starting a fresh system for what follows)", flush=True)
        await self._close_stack()
        if self.o.keep:
            self.stack.keep()
        else:
            with contextlib.suppress(Exception):
                await self.stack.destroy()
        self.restarts += 1
        self.stack = Stack(bootstrap=self.o.bootstrap, run_dir=self.out_dir / f"logs-{self.restarts}",
                           partitions=self.o.partitions, env_overrides=self.o.env)
        self.ledger.clear()
        self._step_lives.clear()
        self._by_wa.clear()
        self.message_ids.clear()
        self._messages_since = 0.0
        await self._open_stack()

    async def _processes(self) -> dict[str, list[int]]:
        groups = {name: [pid] for name, pid in self.stack.service_pids().items()}
        if self._kafka_pid is None or not psutil.pid_exists(self._kafka_pid):
            self._kafka_pid = await asyncio.to_thread(kafka_pid, self.o.bootstrap)
        groups["kafka"] = [self._kafka_pid] if self._kafka_pid else []
        if self.admin_conn is not None:
            labels: dict[int, str] = {}
            self._pg_pids = await postgres_pids(self.admin_conn, self.stack.database, labels)
            self.procs.labels["postgres"] = labels  # the backends' CPU by service, per step
        groups.update(self._pg_pids)
        groups["bench"] = [os.getpid()]
        return groups

    async def teardown(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.procs.stop(), 15)
        await self._close_stack()
        await self.http.aclose()

    # --- watching -------------------------------------------------------------------------------

    async def fetch_messages(self) -> None:
        """New WhatsApp messages from the sandbox, filed under their requests."""
        assert self.stack.system is not None
        # since the last one seen, less a margin (ids already seen are skipped), and only the
        # fields attach_messages reads: a second's messages at 100/s are ~600 KB whole
        response = await self.http.get(f"{self.stack.system.url('sandbox')}/sandbox/whatsapp/messages",
                                       params={"since": repr(self._messages_since - 0.25),
                                               "fields": "id,wa_id,template,received_at_epoch"})
        response.raise_for_status()
        messages = response.json()["messages"]
        stats.attach_messages(self._by_wa, messages, self.message_ids)
        if messages:
            self._messages_since = max(self._messages_since,
                                       max(float(m["received_at_epoch"]) for m in messages))

    async def fetch_partner_times(self, since: float) -> dict[str, float]:
        """request id -> the partner's own seconds until it reported the delivery (bench/stats.py),
        for the shipments the sandbox booked since ``since`` (epoch seconds); {} if unavailable."""
        assert self.stack.system is not None
        try:
            response = await self.http.get(
                f"{self.stack.system.url('sandbox')}/sandbox/shipments",
                params={"timings": "true", "booked_since": repr(since)})
            response.raise_for_status()
            shipments = response.json()["shipments"]
        except Exception as exc:  # noqa: BLE001 - a figure missing, not a broken run
            print(f"  (no partner timings from the sandbox: {exc!r})", file=sys.stderr, flush=True)
            return {}
        return {s["order_ref"]: spent for s in shipments
                if (spent := stats.partner_seconds(s)) is not None}

    async def sample_backlog(self) -> None:
        assert self.stack.system is not None
        for service in SERVICES:
            with contextlib.suppress(Exception):
                health = (await self.http.get(f"{self.stack.system.url(service)}/health")).json()
                self.backlog[service] = max(self.backlog.get(service, 0), int(health["outbox_backlog"]))

    def done(self, life: Lifecycle) -> float | None:
        assert self.tap is not None
        return stats.completed_at(life, self.tap.seen.get(life.request_id, {}))

    async def _watch(self, label: str, bar: tqdm, stop: asyncio.Event) -> None:
        tick, looked_at, finished = 0, 0, 0
        pending: list[Lifecycle] = []  # accepted, not yet finished: only these are looked at
        while not stop.is_set():
            with contextlib.suppress(Exception):
                await self.fetch_messages()
            if tick % 4 == 0:
                await self.sample_backlog()
            lives = self.lives(label)
            pending.extend(lives[looked_at:])
            looked_at = len(lives)
            still = [life for life in pending if self.done(life) is None]
            finished += len(pending) - len(still)
            pending = still
            bar.n = finished
            bar.set_postfix_str(f"accepted {len(lives)} lag {self.lag.latest_total() if self.lag else 0}"
                                f" err {sum(self.errors.values())}", refresh=False)
            bar.refresh()
            tick += 1
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)

    async def drain(self, label: str, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                await self.fetch_messages()
            # newest first: the unfinished are at the end
            if all(self.done(life) is not None for life in reversed(self.lives(label))):
                return True
            await asyncio.sleep(0.5)
        return False

    # --- a step of offered load -----------------------------------------------------------------

    def _log_sizes(self) -> dict[str, int]:
        sizes = {}
        for path in self.stack.run_dir.rglob("*.log"):
            sizes[str(path)] = path.stat().st_size
        return sizes

    def _log_levels(self, since: dict[str, int]) -> dict[str, dict[str, int]]:
        found: dict[str, dict[str, int]] = {}
        for path in self.stack.run_dir.rglob("*.log"):
            with open(path, "rb") as fh:
                fh.seek(since.get(str(path), 0))
                text = fh.read()
            counts = {level: text.count(f'"level": "{level}"'.encode())
                      + text.count(f'"level":"{level}"'.encode()) for level in ("error", "warning")}
            if any(counts.values()):
                found[path.stem if path.parent == self.stack.run_dir else f"{path.stem}#2"] = counts
        return found

    async def step(self, label: str, rate: float, seconds: float, *,
                   during: Any = None) -> dict[str, Any]:
        assert self.tap is not None and self.lag is not None and self.admin_conn is not None
        # What the run holds so far (earlier steps' lifecycles, Kafka records) is frozen out of
        # the collector before the step's window opens, as in the services: full collections
        # that walked it all paused the generator for 100-200 ms
        settle_gc()
        errors0 = Counter(self.errors)
        logs0 = self._log_sizes()
        repeats0 = Counter(self.tap.repeats)
        dead0 = len(self.tap.dead_letters)
        records0 = Counter(self.tap.counts)
        self.backlog = {}
        self.procs.track(await self._processes())
        window = self.procs.open_window()
        pg0 = await pg_counters(self.admin_conn, self.stack.database)
        load0 = loadavg()
        t0 = time.time()
        bar = tqdm(total=max(1, round(rate * seconds)), desc=f"{label:>12}", unit="lc",
                   disable=not self.o.progress, leave=True, dynamic_ncols=True)
        stop = asyncio.Event()
        watcher = asyncio.create_task(self._watch(label, bar, stop))
        side = asyncio.create_task(during()) if during else None
        drive = await self.generator.drive(rate, seconds, label)
        t_offered = time.time()
        drained = await self.drain(label, self.o.drain_s)
        t_end = time.time()
        stop.set()
        await watcher
        side_result = await side if side else None
        bar.close()
        processes = self.procs.close_window(window)
        pg1 = await pg_counters(self.admin_conn, self.stack.database)
        pg = {k: pg1[k] - pg0.get(k, 0) for k in pg1}

        lives = self.lives(label)
        finished = {life.request_id: self.done(life) for life in lives}
        partner = await self.fetch_partner_times(t0 - 60)
        completed = sum(at is not None for at in finished.values())
        # Completed lifecycles per second: the step's completions inside its offered window
        # shifted by the median lifecycle time. While the system keeps up that is the offered
        # rate; once a backlog builds, the rate the system actually finishes lifecycles at.
        took = sorted(at - life.accepted_at for life in lives
                      if (at := finished[life.request_id]) is not None)
        shift = stats.percentile(took, 0.5) if took else 0.0
        in_window = sum(1 for at in finished.values()
                        if at is not None and t0 + shift <= at <= t_offered + shift)
        cpu = {name: p["cpu_s"] for name, p in processes.items()}

        def per_lifecycle(names: set[str]) -> float | None:
            total = sum(v for k, v in cpu.items() if k.split("#")[0] in names)
            return round(total * 1000 / completed, 2) if completed else None

        step_errors = self.errors - errors0
        messages = stats.message_counts([life for life in lives if finished[life.request_id]])
        failures = {t: self.tap.counts[t] - records0[t] for t in topics.FAILURE_TOPICS
                    if self.tap.counts[t] - records0[t]}
        result = {
            "label": label,
            "offered_rate": rate,
            "seconds": seconds,
            "planned": drive.planned,
            "sent": drive.sent,
            "accepted": drive.accepted,
            "shed": drive.shed,
            "achieved_rate": round(drive.achieved_rate, 2),
            "late_sends": drive.late,
            "concurrency_bound_reached": drive.bound_reached,
            "completed": completed,
            "incomplete": len(lives) - completed,
            "completed_per_s": round(in_window / max(t_offered - t0, 1e-9), 2),
            "completion_window_shift_s": round(shift, 2),
            "drained": drained,
            "drain_s": round(t_end - t_offered, 2),
            "stages_ms": stats.stage_latencies(lives, self.tap.seen, partner),
            "consumer_lag": self.lag.window(t0, t_end),
            "outbox_backlog_max": dict(self.backlog),
            "errors": {
                "http_and_robot": dict(step_errors),
                "dead_letters": len(self.tap.dead_letters) - dead0,
                "failure_events": failures,
                "incomplete_lifecycles": len(lives) - completed,
                "repeated_kafka_events": dict(self.tap.repeats - repeats0),
                **messages,
                "log_lines": self._log_levels(logs0),
            },
            "processes": processes,
            "host_probe": probe_summary(self.procs.probes, t0, t_end),
            "cpu_ms_per_lifecycle": {
                "ketanmu_services": per_lifecycle(KETANMU),
                "sandbox": per_lifecycle({"sandbox"}),
                "kafka": per_lifecycle({"kafka"}),
                "postgres": per_lifecycle({"postgres", "postgres-server"}),
                "system_total": per_lifecycle(KETANMU | {"sandbox", "kafka", "postgres", "postgres-server"}),
                "bench_client": per_lifecycle({"bench"}),
            },
            "postgres": {
                **pg,
                **{f"{k}_per_lifecycle": round(v / completed, 1) if completed else None
                   for k, v in pg.items()},
                "note": "xact_commit counts read-only transactions too; wal_sync is cluster-wide",
            },
            "loadavg_start": load0,
            "loadavg_end": loadavg(),
        }
        result["error_total"] = (sum(step_errors.values()) + result["errors"]["dead_letters"]
                                 + sum(failures.values()) + result["incomplete"]
                                 + messages["duplicate_messages"])
        result["kept_up"] = (drained and result["error_total"] == 0
                             and result["completed_per_s"] >= 0.9 * drive.achieved_rate
                             and drive.achieved_rate >= 0.98 * rate
                             and drive.bound_reached == 0
                             and drive.shed == 0
                             and drive.late <= 0.01 * drive.planned)
        if side_result is not None:
            result["side"] = side_result
        self._dump(lives, partner)
        dlv = result["stages_ms"]["accepted_to_delivered"]
        own = result["stages_ms"]["accepted_to_delivered_own"]
        print(f"  {label}: accepted {drive.accepted}/{drive.planned}"
              + (f" (shed with 429: {drive.shed})" if drive.shed else "") + f", completed {completed}"
              f" ({result['completed_per_s']}/s), p50/p99 accepted->delivered {dlv.get('p50')}/"
              f"{dlv.get('p99')} ms (partners' own delay excluded: {own.get('p50')}/{own.get('p99')}),"
              f" errors {result['error_total']}, load {result['loadavg_end'][0]}",
              flush=True)
        return result

    def _dump(self, lives: list[Lifecycle], partner: dict[str, float]) -> None:
        """Every request's raw times, one JSON line each."""
        assert self.tap is not None
        seen = self.tap.seen
        lines = (json.dumps({**dataclasses.asdict(life), "on_kafka": seen.get(life.request_id, {}),
                             "partner_own_s": partner.get(life.request_id)})
                 + "\n" for life in lives)
        with open(self.out_dir / "lifecycles.jsonl", "a") as fh:
            fh.writelines(lines)

    async def settle(self, timeout_s: float) -> bool:
        """Wait until every lifecycle so far is finished (or gave up) and no group lags."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                await self.fetch_messages()
            lag = self.lag.latest_total() if self.lag else 0
            if lag == 0 and all(self.done(life) is not None for life in self.ledger.values()):
                return True
            await asyncio.sleep(1.0)
        return False

    async def idle(self, seconds: float) -> dict[str, Any]:
        self.procs.track(await self._processes())
        window = self.procs.open_window()
        t0 = time.time()
        await asyncio.sleep(seconds)
        return {"seconds": seconds, "processes": self.procs.close_window(window),
                "host_probe": probe_summary(self.procs.probes, t0, time.time())}

    # --- scale-out ------------------------------------------------------------------------------

    async def scale_out(self) -> dict[str, Any]:
        """A second printing and a second notify join their groups while load runs."""
        assert self.stack.system is not None and self.tap is not None
        if not await self.settle(30.0):
            await self.restart()
        label = f"scale-out {self.o.scale_rate:g}/s"
        started: dict[str, float] = {}

        async def join() -> dict[str, Any]:
            await asyncio.sleep(min(3.0, self.o.scale_s / 4))
            for service in ("printing", "notify"):
                second = await asyncio.to_thread(self.stack.start_second_instance, service)
                started[service] = time.time()
                if service == "printing":
                    self.robot.urls.append(second.url("printing"))
            await asyncio.sleep(2.0)
            return await self._group_members()

        before = await self._applied()
        step = await self.step(label, self.o.scale_rate, self.o.scale_s, during=join)
        members_during = step.pop("side", {})
        after = await self._applied()
        lives = self.lives(label)
        ids = {life.request_id for life in lives}
        numbers = {rid: n for rid, n in self.tap.document_numbers.items() if rid in ids}
        check = {
            "instances": {"printing": 2, "notify": 2},
            "group_members": members_during,
            "events_applied_during_phase": {k: after.get(k, 0) - before.get(k, 0) for k in after},
            "lifecycles": len(lives),
            "completed": step["completed"],
            **stats.message_counts(lives),
            **stats.repeated_document_numbers(numbers),
            "repeated_kafka_events": step["errors"]["repeated_kafka_events"],
        }
        shares = check["events_applied_during_phase"]
        check["both_instances_consumed"] = all(
            shares.get(s, 0) > 0 and shares.get(f"{s}#2", 0) > 0 for s in ("printing", "notify"))
        check["no_duplicate_effects"] = (check["duplicate_messages"] == 0
                                         and check["requests_printed_twice"] == 0
                                         and check["numbers_used_twice"] == 0)
        check["ok"] = (check["both_instances_consumed"] and check["no_duplicate_effects"]
                       and check["missing_messages"] == 0 and step["incomplete"] == 0)
        # back to one instance each for what follows
        await asyncio.to_thread(self._stop_second_instances)
        self.robot.urls = [self.stack.system.url("printing")]
        return {"check": check, "step": step}

    def _stop_second_instances(self) -> None:
        for service, second in list(self.stack.extra.items()):
            second.stop(service)
        self.stack.extra.clear()

    async def _applied(self) -> dict[str, int]:
        applied = {}
        urls = {s: self.stack.system.url(s) for s in SERVICES} if self.stack.system else {}
        urls |= {f"{s}#2": second.url(s) for s, second in self.stack.extra.items()}
        for name, url in urls.items():
            with contextlib.suppress(Exception):
                health = (await self.http.get(f"{url}/health")).json()
                applied[name] = int((health.get("consumer") or {}).get("applied", 0))
        return applied

    async def _group_members(self) -> dict[str, Any]:
        from aiokafka.admin import AIOKafkaAdminClient
        from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment

        admin = AIOKafkaAdminClient(bootstrap_servers=self.o.bootstrap)
        await admin.start()
        out: dict[str, Any] = {}
        try:
            for service in ("printing", "notify"):
                (response,) = await admin.describe_consumer_groups([self.stack.group(service)])
                group = response.groups[0]
                members = []
                for member in group[5]:
                    assignment = ConsumerProtocolMemberAssignment.decode(member[4]) if member[4] else None
                    parts = sum(len(p) for _, p in assignment.assignment) if assignment else 0
                    members.append({"client_id": member[1], "partitions": parts})
                out[service] = {"state": group[2], "members": members}
        except Exception as exc:  # noqa: BLE001 - a figure, not a crash
            out["error"] = repr(exc)
        finally:
            await admin.close()
        return out

    # --- profile --------------------------------------------------------------------------------

    async def profile(self) -> dict[str, Any]:
        label = f"profile {self.o.profile_rate:g}/s"
        out_dir = self.out_dir / "profiles"
        holder: dict[str, Any] = {}

        async def spy() -> None:
            await asyncio.sleep(2.0)
            pids = {n: p for n, p in self.stack.service_pids().items()}
            holder.update(await profiling.record(pids, self.o.profile_s, out_dir,
                                                 native=self.o.profile_native))

        seconds = self.o.profile_s + 4.0
        step = await self.step(label, self.o.profile_rate, seconds, during=spy)
        step.pop("side", None)
        (out_dir / "summary.txt").write_text(profiling.render(holder, lines=25) + "\n")
        return {"step": step, "profiles": holder, "note": "figures of this step include py-spy's overhead"}

    # --- baselines ------------------------------------------------------------------------------

    async def baselines(self) -> dict[str, Any]:
        assert self.tap is not None
        size = self.tap.mean_value_size()
        out: dict[str, Any] = {"message_bytes_source": "mean value size of Ketanmu's lifecycle events"}
        try:
            out["kafka_chain"] = await baselines.raw_kafka_chain(
                bootstrap=self.o.bootstrap, prefix=self.stack.prefix, partitions=self.o.partitions,
                size=size, rate=self.o.raw_rate, seconds=self.o.raw_s, burst=self.o.raw_burst,
                log_dir=self.stack.run_dir, kafka=self._kafka_pid)
        except Exception as exc:  # noqa: BLE001 - report what failed, keep the rest
            out["kafka_chain"] = {"error": repr(exc)}
        out["postgres"] = []
        for concurrency in sorted({1, self.o.pg_concurrency}):
            try:
                out["postgres"].append(await baselines.postgres_transactions(
                    dsn=self.stack.dsn, seconds=self.o.pg_s, concurrency=concurrency, size=size))
            except Exception as exc:  # noqa: BLE001
                out["postgres"].append({"concurrency": concurrency, "error": repr(exc)})
        return out


def environment(options: Options) -> dict[str, Any]:
    return {
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "loadavg_at_start": loadavg(),
        # the host's speed before anything starts (observe.speed_probe_ms; steps: host_probe)
        "host_probe_ms_at_start": round(statistics.median(speed_probe_ms() for _ in range(15)), 2),
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(options).items()},
    }
