"""The benchmark's operator robot: a stack whose answer was lost is still printed, once."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import orjson

from bench.load import OPERATOR, OperatorRobot
from bench.rawhttp import Response


class PrintQueue:
    """A print queue behind the robot's HTTP calls: claim-next, the operator's pile, printed.
    The first claim-next claims its stack and then loses the answer, as a dropped connection
    does."""

    def __init__(self, queued: list[str]) -> None:
        self.queued = list(queued)
        self.claimed: dict[str, str] = {}
        self.printed: Counter[str] = Counter()
        self.claim_calls: list[bool] = []
        self.lose_next_answer = True

    @staticmethod
    def _ok(body: Any) -> Response:
        return Response(200, orjson.dumps(body))

    async def post(self, url: str, json: Any = None, headers: Any = None,
                   retry: bool = True) -> Response:
        if url.endswith("/print-jobs/claim-next"):
            self.claim_calls.append(retry)
            stack, self.queued = self.queued[:json["limit"]], self.queued[json["limit"]:]
            self.claimed.update((rid, json["operator"]) for rid in stack)
            if self.lose_next_answer:
                self.lose_next_answer = False
                raise ConnectionError("connection reset after the claim was made")
            return self._ok({"jobs": [{"request_id": rid} for rid in stack]})
        request_id = url.rsplit("/", 2)[-2]
        assert url.endswith("/printed") and self.claimed.pop(request_id) == json["operator"]
        self.printed[request_id] += 1
        return self._ok({})

    async def get(self, url: str, params: Any = None, headers: Any = None) -> Response:
        assert params["status"] == "claimed"
        pile = [rid for rid, op in self.claimed.items() if op == params["claimed_by"]]
        return self._ok({"jobs": [{"request_id": rid} for rid in pile]})


async def test_a_stack_whose_answer_was_lost_is_printed_once() -> None:
    jobs = [f"00000000-0000-4000-8000-{n:012d}" for n in range(5)]
    queue = PrintQueue(jobs)
    errors: Counter[str] = Counter()
    robot = OperatorRobot(queue, ["http://printing"], errors, concurrency=3,  # type: ignore[arg-type]
                          poll_s=0.01)
    await robot.start()
    try:
        for _ in range(300):
            if sum(queue.printed.values()) == len(jobs):
                break
            await asyncio.sleep(0.01)
    finally:
        await robot.stop()
    assert queue.printed == Counter(jobs)  # every job, none twice
    assert errors == {"print queue: ConnectionError": 1}
    assert set(queue.claim_calls) == {False}  # claim-next is never retried blindly
    assert OPERATOR == "operator-bench"
