"""shared/kafka/consumer.py: a consumed batch is never given up (giving up would lose it: the next
batch's offset commit covers it)."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest

from shared.kafka.consumer import EventConsumer


@pytest.mark.parametrize(
    "failure",
    [asyncpg.exceptions.InternalClientError("cannot switch to state 15"), RuntimeError("bug"),
     ConnectionResetError("reset")],
)
async def test_a_batch_that_fails_is_tried_again_until_it_is_applied(
    failure: Exception, monkeypatch: pytest.MonkeyPatch
) -> None:
    consumer = EventConsumer(service="t", group_id="t", pool_provider=lambda: None,  # type: ignore[arg-type,return-value]
                             handlers={})
    tries: list[int] = []
    committed: list[bool] = []

    async def apply(records: Any) -> None:
        tries.append(len(records))
        if len(tries) < 3:
            raise failure

    async def no_sleep(_: float) -> None:
        return None

    monkeypatch.setattr(consumer, "_apply", apply)
    monkeypatch.setattr("shared.kafka.consumer.asyncio.sleep", no_sleep)
    consumer._after_commit.append(lambda: committed.append(True))
    await consumer.consume_batch([object(), object()])  # type: ignore[list-item]
    assert tries == [2, 2, 2] and committed == [True] and consumer.stats.batches == 1
