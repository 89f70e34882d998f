"""Ops' tool for the dead-letter topics (``dlq.<service>``): list, inspect, replay.

    python -m shared.kafka.deadletters list [--service notify ...] [--json]
    python -m shared.kafka.deadletters show notify:3:17 [--raw]
    python -m shared.kafka.deadletters replay notify:3:17 [notify:0:4 ...] [--dry-run]
    python -m shared.kafka.deadletters replay --service courier --all [--reason-contains TEXT]
    python -m shared.kafka.deadletters replay notify:3:17 --value-file fixed.json

A dead letter is named ``<service>:<partition>:<offset>`` (its place in ``dlq.<service>``). It
carries the original message's key, value and headers, plus ``dlq-reason``,
``dlq-original-topic``, ``dlq-original-partition``/``-offset`` (absent for a WhatsApp send that
notify gave up: ``dlq-kind: whatsapp-send``) and ``dlq-consumer``.

**Replay**, once the cause is fixed (a deploy, a partner back, a corrected value): the original
value is published again to its original topic, with its key and headers and ``dlq-replay-of``.
Every consumer group of that topic sees it; the ones that applied the event skip it (their inbox
has its ``event_id``); the one that dead-lettered it applies it once, because a dead-lettered
event's inbox row was rolled back (or, for a given-up send, deleted). Replaying twice is harmless
for the same reason. A replay that fails again is dead-lettered again, under a new offset.

``KAFKA_BOOTSTRAP_SERVERS`` and ``KAFKA_TOPIC_PREFIX`` (empty in production) say where to look.
Values are shown with NIKs and phone numbers masked unless ``--raw``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from shared.contracts.topics import SERVICES, dead_letter_topic
from shared.privacy import mask_text

DLQ_PREFIX = "dlq-"
REPLAY_HEADER = "dlq-replay-of"


@dataclass(frozen=True)
class DeadLetter:
    service: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, str], ...]

    @property
    def ref(self) -> str:
        return f"{self.service}:{self.partition}:{self.offset}"

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k == name), None)

    @property
    def reason(self) -> str:
        return self.header("dlq-reason") or ""

    @property
    def original_topic(self) -> str | None:
        return self.header("dlq-original-topic")

    @property
    def at(self) -> datetime:
        return datetime.fromtimestamp(self.timestamp_ms / 1000, UTC)

    def origin(self) -> str:
        topic = self.original_topic or "?"
        partition = self.header("dlq-original-partition")
        offset = self.header("dlq-original-offset")
        return f"{topic}[{partition}]@{offset}" if partition is not None else topic

    def summary(self) -> dict[str, Any]:
        return {
            "ref": self.ref,
            "at": self.at.isoformat().replace("+00:00", "Z"),
            "origin": self.origin(),
            "consumer": self.header("dlq-consumer"),
            "kind": self.header("dlq-kind") or "consume",
            "key": (self.key or b"").decode("utf-8", "replace"),
            "reason": self.reason,
        }


def parse_ref(ref: str) -> tuple[str, int, int]:
    """``notify:3:17`` -> ("notify", 3, 17)."""
    parts = ref.split(":")
    if len(parts) != 3 or parts[0] not in SERVICES or not all(p.isdigit() for p in parts[1:]):
        raise ValueError(f"not a dead letter: {ref!r} (want <service>:<partition>:<offset>,"
                         f" service one of {', '.join(SERVICES)})")
    return parts[0], int(parts[1]), int(parts[2])


def replay_headers(dead: DeadLetter) -> list[tuple[str, bytes]]:
    """The original message's headers (not the ``dlq-*`` ones) and where it was replayed from."""
    kept = [(k, v.encode()) for k, v in dead.headers if not k.startswith(DLQ_PREFIX)]
    return [*kept, (REPLAY_HEADER, dead.ref.encode())]


def display_value(value: bytes | None, raw: bool) -> str:
    if value is None:
        return "<no value>"
    text = value.decode("utf-8", "replace")
    try:
        text = json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    except ValueError:
        pass
    return text if raw else mask_text(text)


def table(rows: Sequence[dict[str, Any]]) -> str:
    columns = ("ref", "at", "origin", "consumer", "kind", "reason")
    cells = [[str(r[c] or "-") for c in columns] for r in rows]
    for line in cells:
        line[-1] = line[-1][:90]
    widths = [max([len(c), *(len(line[i]) for line in cells)]) for i, c in enumerate(columns)]
    out = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True))]
    out += ["  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)) for line in cells]
    return "\n".join(line.rstrip() for line in out)


def _dead_letter(service: str, record: Any) -> DeadLetter:
    headers = tuple(
        (k, (v or b"").decode("utf-8", "replace")) for k, v in (record.headers or ())
    )
    return DeadLetter(service, record.partition, record.offset, record.timestamp, record.key,
                      record.value, headers)


class DeadLetterTopics:
    """Reads and replays the dead-letter topics of one Kafka cluster and topic namespace."""

    def __init__(self, bootstrap: str, prefix: str = "") -> None:
        self.bootstrap = bootstrap
        self.prefix = prefix

    def topic(self, service: str) -> str:
        return self.prefix + dead_letter_topic(service)

    async def list(self, services: Iterable[str] = SERVICES) -> list[DeadLetter]:
        wanted = {self.topic(s): s for s in services}
        tps = await self._partitions(list(wanted))
        if not tps:
            return []
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False)
        await consumer.start()
        found: list[DeadLetter] = []
        try:
            ends = await consumer.end_offsets(tps)
            starts = await consumer.beginning_offsets(tps)
            remaining = {tp for tp in tps if ends[tp] > starts[tp]}
            consumer.assign(tps)
            for tp in tps:
                consumer.seek(tp, starts[tp])
            while remaining:
                batch = await consumer.getmany(timeout_ms=1000)
                for tp, records in batch.items():
                    for record in records:
                        if record.offset < ends[tp]:
                            found.append(_dead_letter(wanted[tp.topic], record))
                        if record.offset + 1 >= ends[tp]:
                            remaining.discard(tp)
                if not batch:
                    remaining = {tp for tp in remaining if await consumer.position(tp) < ends[tp]}
        finally:
            await consumer.stop()
        return sorted(found, key=lambda d: (d.timestamp_ms, d.service, d.partition, d.offset))

    async def _partitions(self, topics: list[str]) -> list[TopicPartition]:
        """The partitions of those of ``topics`` that exist (none is created by asking)."""
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await admin.start()
        try:
            existing = set(await admin.list_topics())
            described = await admin.describe_topics([t for t in topics if t in existing])
        finally:
            await admin.close()
        return sorted(
            TopicPartition(d["topic"], p["partition"])
            for d in described
            for p in d["partitions"]
        )

    async def get(self, ref: str) -> DeadLetter:
        service, partition, offset = parse_ref(ref)
        tp = TopicPartition(self.topic(service), partition)
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False)
        await consumer.start()
        try:
            end = (await consumer.end_offsets([tp]))[tp]
            if offset >= end:
                raise LookupError(f"no dead letter {ref} ({tp.topic}[{partition}] ends at {end})")
            consumer.assign([tp])
            consumer.seek(tp, offset)
            record = await asyncio.wait_for(consumer.getone(tp), 30)
            if record.offset != offset:  # removed by retention
                raise LookupError(f"no dead letter {ref} (first offset now {record.offset})")
            return _dead_letter(service, record)
        finally:
            await consumer.stop()

    async def replay(self, dead: Sequence[DeadLetter], value: bytes | None = None) -> list[str]:
        """Publish each to its original topic; return what was done, one line each."""
        for d in dead:
            if not d.original_topic:
                raise ValueError(f"{d.ref} has no dlq-original-topic header: cannot replay")
        producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap, acks="all", enable_idempotence=True
        )
        await producer.start()
        done: list[str] = []
        try:
            for d in dead:
                topic = self.prefix + (d.original_topic or "")
                meta = await producer.send_and_wait(
                    topic, value if value is not None else d.value, key=d.key,
                    headers=replay_headers(d),
                )
                done.append(f"{d.ref} -> {topic}[{meta.partition}]@{meta.offset}")
        finally:
            await producer.stop()
        return done


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m shared.kafka.deadletters",
        description="List, inspect and replay the dead-letter topics dlq.<service>.",
    )
    parser.add_argument(
        "--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    )
    parser.add_argument("--prefix", default=os.environ.get("KAFKA_TOPIC_PREFIX", ""),
                        help="topic namespace of a test run; empty in production")
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("list", help="every dead letter, oldest first")
    listing.add_argument("--service", action="append", choices=SERVICES)
    listing.add_argument("--json", action="store_true", help="one JSON object a line")
    show = commands.add_parser("show", help="one dead letter: headers and value")
    show.add_argument("ref", help="<service>:<partition>:<offset>")
    show.add_argument("--raw", action="store_true", help="do not mask NIKs and phone numbers")
    replay = commands.add_parser("replay", help="publish again to the original topic")
    replay.add_argument("refs", nargs="*", help="<service>:<partition>:<offset> ...")
    replay.add_argument("--service", action="append", choices=SERVICES)
    replay.add_argument("--all", action="store_true", help="every dead letter of --service")
    replay.add_argument("--reason-contains", help="with --all: only those whose reason has this")
    replay.add_argument("--value-file", help="with one ref: publish this corrected value instead")
    replay.add_argument("--dry-run", action="store_true")
    return parser


async def _run(args: argparse.Namespace) -> int:
    topics = DeadLetterTopics(args.bootstrap, args.prefix)
    if args.command == "list":
        found = await topics.list(args.service or SERVICES)
        if args.json:
            for d in found:
                print(json.dumps(d.summary(), ensure_ascii=False))
        else:
            print(table([d.summary() for d in found]) if found else "no dead letters")
        return 0
    if args.command == "show":
        d = await topics.get(args.ref)
        where = f"{topics.topic(d.service)}[{d.partition}]@{d.offset}"
        print(f"{d.ref}  ({where}, {d.summary()['at']})")
        print(f"key: {(d.key or b'').decode('utf-8', 'replace')}")
        for k, v in d.headers:
            print(f"{k}: {v}")
        print()
        print(display_value(d.value, args.raw))
        return 0
    if args.all == bool(args.refs):
        print("error: give dead letters to replay, or --all with --service", file=sys.stderr)
        return 2
    if args.all:
        if not args.service:
            print("error: --all needs --service (which dead-letter topics)", file=sys.stderr)
            return 2
        chosen = [d for d in await topics.list(args.service)
                  if not args.reason_contains or args.reason_contains in d.reason]
    else:
        chosen = [await topics.get(ref) for ref in args.refs]
    value = None
    if args.value_file:
        if len(chosen) != 1:
            print("error: --value-file goes with exactly one dead letter", file=sys.stderr)
            return 2
        value = Path(args.value_file).read_bytes()
    if args.dry_run:
        for d in chosen:
            print(f"would replay {d.ref} -> {args.prefix}{d.original_topic} ({d.reason[:80]})")
        return 0
    for line in await topics.replay(chosen, value):
        print(f"replayed {line}")
    print(f"{len(chosen)} dead letter(s) replayed")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return asyncio.run(_run(args))
    except (ValueError, LookupError, KafkaError, TimeoutError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
