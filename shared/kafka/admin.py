"""Create Ketanmu's topics explicitly, with a chosen partition count.

    python -m shared.kafka.admin create-topics [--partitions 6]
    python -m shared.kafka.admin wait          # until the broker answers

Clients never auto-create topics (that would give one partition).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Collection

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, KafkaError

from shared.contracts.topics import ALL_TOPICS

DEFAULT_BOOTSTRAP = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
DEFAULT_PARTITIONS = int(os.environ.get("KAFKA_TOPIC_PARTITIONS", "6"))


async def wait_for_broker(bootstrap: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
        try:
            await admin.start()
            await admin.describe_cluster()
            return
        except (KafkaError, OSError) as exc:
            last = exc
            await asyncio.sleep(0.5)
        finally:
            await admin.close()
    raise TimeoutError(f"Kafka at {bootstrap} did not answer within {timeout_s:.0f}s: {last!r}")


async def await_listed(
    admin: AIOKafkaAdminClient, names: Collection[str], *, listed: bool, timeout_s: float = 15.0
) -> None:
    """Wait until the broker's metadata lists every one of ``names`` (``listed``) or none of them.

    Creating or deleting a topic is answered once the controller has done it; the broker's
    metadata, which clients read, follows a moment later (a test listing the topics right after
    creating them once found none)."""
    deadline = time.monotonic() + timeout_s
    while True:
        present = set(await admin.list_topics())
        wrong = [t for t in names if (t in present) != listed]
        if not wrong:
            return
        if time.monotonic() > deadline:
            state = "not listed" if listed else "still listed"
            raise TimeoutError(f"{len(wrong)} topics {state} after {timeout_s:.0f}s: {wrong[:3]}")
        await asyncio.sleep(0.05)


async def create_topics(
    bootstrap: str, partitions: int, topics: tuple[str, ...] = ALL_TOPICS, prefix: str = ""
) -> list[str]:
    """Create the missing topics (``prefix`` + name); return the names created. Idempotent.
    Returns once the broker lists every one of them."""
    topics = tuple(prefix + t for t in topics)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in topics if t not in existing]
        if missing:
            await admin.create_topics(
                [NewTopic(name=t, num_partitions=partitions, replication_factor=1) for t in missing]
            )
            await await_listed(admin, missing, listed=True)
        return missing
    finally:
        await admin.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shared.kafka.admin")
    parser.add_argument("command", choices=["create-topics", "wait"])
    parser.add_argument("--bootstrap", default=DEFAULT_BOOTSTRAP)
    parser.add_argument("--partitions", type=int, default=DEFAULT_PARTITIONS)
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--prefix", default=os.environ.get("KAFKA_TOPIC_PREFIX", ""),
                        help="namespace for a test or benchmark run; empty in production")
    args = parser.parse_args(argv)
    try:
        asyncio.run(wait_for_broker(args.bootstrap, args.timeout))
        if args.command == "create-topics":
            created = asyncio.run(create_topics(args.bootstrap, args.partitions, prefix=args.prefix))
            print(
                f"topics: {len(ALL_TOPICS)} present, created {len(created)}"
                f" ({args.partitions} partitions each): {', '.join(created) or '-'}"
            )
    except (TimeoutError, KafkaConnectionError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
