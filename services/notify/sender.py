"""The sender loop: sends each noted message once, as free text or an approved template.

**One message per event and recipient.** The consumer writes one row per (event, recipient); the
sender claims due rows (``FOR UPDATE SKIP LOCKED``, with a claim token, so several instances share
the work), calls the Cloud API and stores the returned wamid (``sent``). Every message carries its
identity (``<event_id>/<recipient>``) as ``biz_opaque_callback_data``, which WhatsApp echoes in the
message's status callbacks (``webhooks.py``).

**The one window where a message can go out twice**: the Cloud API accepted it, and notify never
learnt so: the process died (or the answer was lost: a read timeout, a dropped connection) after
the request left and before ``sent`` was stored. The Cloud API has no idempotency key, so this
cannot be closed, only narrowed:

* the window is one HTTP call per message, and a lost database after the answer is retried in
  memory (``SentStore``), not by sending again; at shutdown the sends on the wire are waited for
  and their answers stored before the loop returns;
* an unanswered send is not repeated at once: the row waits ``SEND_CONFIRM_WAIT_S`` (after a
  timeout, or after its claim ran out when its sender died) for a status callback naming it,
  which marks it sent;
* only if none comes is it sent again. So a duplicate needs the Cloud API to accept a message,
  its answer to be lost, *and* its status callbacks to be lost or later than the wait.

**Retries and dead letters.** A send refused for a passing reason (5xx, 429, throttling,
connection refused) is retried with backoff; after ``SEND_MAX_ATTEMPTS`` attempts, or at once
for a refusal that can never succeed, it is given up: the row becomes ``failed``
(``GET /notifications?status=failed``) and the event is dead-lettered to ``dlq.notify`` with the
reason; replaying it (``python -m shared.kafka.deadletters replay``) once the cause is fixed re-arms
the row.

**Order.** A recipient's messages go out in the order of their facts: a row is due only when no
earlier row of the same request and recipient is still unsent. A message waits until its recipient
is known (request-registered can be consumed after a later event).

**Batches** (CPU: a transaction costs more than the row it writes). Answers go to an in-memory
queue; one task (``SentStore``) stores everything queued at once (``repository.mark_sent_many``:
one UPDATE over arrays, on its own without BEGIN and COMMIT; the rare rows it leaves, whose status
callbacks came before the answer or that already have another wamid, are stored one at a time in
a transaction), as soon as the previous store is done, so a lone answer is stored at once. A
recipient's next message becomes due only when that commits, so the store then wakes the sender:
when a stored row has an unsent successor, or when a claim ran while the store was pending (it
may have missed a successor noted meanwhile). The sender claims when woken, when its last claim
may have left due rows behind and half the slots (or all) are free, and every second (backoffs and
confirm waits running out), not after every send.
Failures (a retry, the confirm wait, giving up) are stored one row at a time: they are rare.

**Planned once.** The claim and the batch store run on the sender's own connections
(``SENDER_POOL_SETTINGS``: ``plan_cache_mode = force_generic_plan``), which plan each statement
once and keep the plan. On the service's pool PostgreSQL chose a fresh custom plan for most calls:
the batch store's arrays, and the claim's LIMIT, make the generic plan look dearer. The claim takes
~0.9 ms to plan, longer than it runs; at 60 lifecycles/s the two were replanned 1,600 times a
minute, ~0.55 ms of PostgreSQL's CPU per lifecycle. The generic plans are the custom plans'
shape (tests/integration/test_notify_sender.py checks both): the claim walks
``notifications_due_in_order`` and stops at its LIMIT; each recipient's earlier or next message is
looked up by ``notifications_unsent_by_recipient``; the store finds its rows by primary key.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import asyncpg

from shared.contracts.events import parse_event
from shared.contracts.topics import dead_letter_topic
from shared.db.pool import TRANSIENT_DB_ERRORS
from shared.logging import get_logger
from shared.outbox import add_record, event_headers, wake_relay
from shared.privacy import mask_phone
from shared.whatsapp.client import WhatsAppClient, WhatsAppError

from .domain import callback_ref, message_kind, retry_delay
from .repository import Accepted, mark_sent_many
from .templates import TEMPLATES, context, params_for, render

if TYPE_CHECKING:
    from shared.runtime import Runtime

log = get_logger(__name__)

_CLAIM = """
WITH due AS (
    SELECT n.id FROM notifications n
    -- written so that the plan walks notifications_due_in_order and stops at the LIMIT: the
    -- claim costs the same with 10 or 10,000 messages waiting (an OR of statuses made it scan
    -- and sort every unsent row: 5-8 ms per claim with 600 waiting, and slower as notify fell
    -- behind)
    -- unsent: pending, sending or unconfirmed (migration 0007: the partial indexes' predicate)
    WHERE n.unsent AND n.next_attempt_at <= now()
      -- its sender died, maybe mid-send: give status callbacks the confirm wait too
      AND (n.status <> 'sending' OR n.claimed_until + make_interval(secs => $4) < now())
      -- known, and not erased (services/notify/retention.py: nobody to send it to)
      AND EXISTS (SELECT 1 FROM recipients r WHERE r.request_id = n.request_id
                  AND r.personal_data_erased_at IS NULL)
      -- OFFSET 0 keeps this a lookup per candidate by notifications_unsent_by_recipient; as an
      -- anti-join, with statistics older than a growing backlog, the planner scanned every
      -- unsent row for each candidate (7 ms against 0.4 ms with 800 waiting)
      AND NOT EXISTS (
          SELECT 1 FROM notifications e
          WHERE e.request_id = n.request_id AND e.recipient = n.recipient
            AND (e.occurred_at, e.id) < (n.occurred_at, n.id) AND e.unsent
          OFFSET 0)
    ORDER BY n.next_attempt_at, n.occurred_at
    LIMIT $1
    FOR UPDATE OF n SKIP LOCKED
)
UPDATE notifications n
SET status = 'sending', claimed_until = now() + make_interval(secs => $2), claim_token = $3,
    attempts = n.attempts + 1
FROM due, recipients r
WHERE n.id = due.id AND r.request_id = n.request_id
RETURNING n.id, n.event_id, n.request_id, n.event_type, n.event_data, n.attempts, n.recipient,
    n.force_template, r.phone, r.name, r.delivery_phone, r.delivery_name, r.tracking_code,
    r.document_type, r.partner, r.cod_fee, r.requirement_documents,
    (SELECT c.last_inbound_at FROM conversations c
     WHERE c.wa_id = regexp_replace(
         CASE n.recipient WHEN 'delivery' THEN r.delivery_phone ELSE r.phone END, '\\D', '', 'g')
    ) AS last_inbound_at
"""

# the sender pool's connections: a generic plan from the first call ("Planned once" above)
SENDER_POOL_SETTINGS = {"plan_cache_mode": "force_generic_plan"}


def statements_pool(rt: Runtime) -> Any:
    """Where the claim and the batch store run: the sender's pool (``app._start``), or the
    service's pool where there is none (tests that run the loop on their own pool)."""
    return rt.extras.get("sender_pool") or rt.pool


# A claim costs as much for one row as for sixteen: after the first, claim only once this share of
# the slots is free (or none is busy), not after every finished send.
_CLAIM_WHEN_FREE = 0.5
_CLAIM_EVERY_S = 1.0  # and at least this often: rows whose backoff or confirm wait ran out


async def sender_loop(rt: Runtime) -> None:
    """Keep up to ``SEND_CONCURRENCY`` sends in flight; store their answers in batches.

    Claims when woken (new rows, a store that made a recipient's next message due, a re-armed
    row), when the last claim may have left due rows behind and enough slots are free, or every
    ``_CLAIM_EVERY_S``.
    """
    wake = rt.waker("sender")
    client: WhatsAppClient = rt.extras["whatsapp"]
    s = rt.settings
    capacity = s.send_concurrency
    enough = max(1, int(capacity * _CLAIM_WHEN_FREE))
    loop = asyncio.get_running_loop()
    statements = statements_pool(rt)
    stores = SentStore(rt, wake)
    inflight: set[asyncio.Task[None]] = set()
    more = True  # due rows may be waiting that the last claim did not take
    last_claim = float("-inf")
    # What the loop waits for, resolved by the first of: the waker, a finished send, the timer.
    # One future per turn: asyncio.wait over a fresh task waiting on the waker plus every send in
    # flight cost a task and a callback per send in flight at every turn (a turn per send).
    tick: asyncio.Future[None] = loop.create_future()

    def poke(_: object = None) -> None:
        if not tick.done():
            tick.set_result(None)

    def finished(task: asyncio.Task[None]) -> None:
        inflight.discard(task)
        poke()

    waiting: asyncio.Task[bool] | None = None  # waits for the waker until it is set
    try:
        while True:
            if wake.is_set():
                wake.clear()
                more = True
            free = capacity - len(inflight)
            timer = loop.time() - last_claim >= _CLAIM_EVERY_S
            if free > 0 and (timer or (more and (free >= enough or not inflight))):
                token = uuid.uuid4()
                stores.claims += 1
                last_claim = loop.time()
                try:
                    claimed = await statements.fetch(
                        _CLAIM, free, s.send_claim_s, token, s.send_confirm_wait_s
                    )
                except TRANSIENT_DB_ERRORS as exc:
                    log.warning("sender cannot reach the database", error=repr(exc))
                    await asyncio.sleep(1.0)
                    continue
                except Exception:
                    log.exception("sender error")
                    await asyncio.sleep(1.0)
                    continue
                more = len(claimed) == free
                for row in claimed:
                    task = asyncio.create_task(_deliver(rt, client, row, token, stores))
                    inflight.add(task)
                    task.add_done_callback(finished)
            # A finished send frees a slot; the recipient's next message becomes due only once its
            # store commits, and the store wakes us then.
            free = capacity - len(inflight)
            timeout = None if free == 0 else max(0.0, last_claim + _CLAIM_EVERY_S - loop.time())
            if waiting is None or waiting.done():
                waiting = asyncio.ensure_future(wake.wait())
                waiting.add_done_callback(poke)
            alarm = None if timeout is None else loop.call_later(timeout, poke)
            try:
                await tick
            finally:
                if alarm is not None:
                    alarm.cancel()
            # what woke us is looked at at the top (the waker's flag, the free slots, the time)
            tick = loop.create_future()
    finally:
        if waiting is not None:
            waiting.cancel()
        # Stopping: let the sends already on the wire finish and their answers be stored rather
        # than leave them to the confirm window.
        grace = s.whatsapp_timeout_s + 2
        if inflight:
            await asyncio.wait(inflight, timeout=grace)
        await stores.close(grace)


class SentStore:
    """Accepted sends waiting to be stored, and the one task that stores them.

    Everything queued while the previous store ran is stored at once (``mark_sent_many``: one
    statement in the common case). The database being away is retried here, never by sending again.
    """

    def __init__(self, rt: Runtime, wake: asyncio.Event) -> None:
        self.rt = rt
        self.wake = wake
        # Claims the sender started. One that ran after a send was queued and before its store
        # committed may have found the recipient's next message not yet due: wake the sender.
        self.claims = 0
        self._queue: list[tuple[Accepted, int]] = []
        self._storing: list[tuple[Accepted, int]] = []
        self._ready = asyncio.Event()
        self._closing = False
        self._task = asyncio.create_task(self._run(), name="notify-sent-store")

    def put(self, accepted: Accepted) -> None:
        self._queue.append((accepted, self.claims))
        self._ready.set()

    async def close(self, timeout_s: float) -> None:
        """Store what is queued, then stop; give up (and say so) after ``timeout_s``."""
        self._closing = True
        self._ready.set()
        await asyncio.wait({self._task}, timeout=timeout_s)
        if not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        left = self._unstored
        if left:
            # still 'sending': after the claim and the confirm wait, status callbacks confirm them
            log.error("accepted messages not stored at shutdown", count=len(left),
                      request_ids=[str(a.request_id) for a in left],
                      wamids=[a.wamid for a in left])

    @property
    def _unstored(self) -> list[Accepted]:
        return [a for a, _ in self._storing + self._queue]

    async def _run(self) -> None:
        while True:
            if not self._queue:
                if self._closing:
                    return
                self._ready.clear()
                await self._ready.wait()
                continue
            batch, self._queue = self._queue, []
            self._storing = batch
            due = await self._store(batch)
            self._storing = []
            if due or any(seen != self.claims for _, seen in batch):
                self.wake.set()

    async def _store(self, batch: list[tuple[Accepted, int]]) -> bool:
        """Store ``batch`` (one statement in the common case: ``mark_sent_many``); True if a
        message may have become due by it."""
        delay = 0.2
        while True:
            try:
                async with statements_pool(self.rt).acquire() as conn:
                    return await mark_sent_many(conn, [a for a, _ in batch])
            except TRANSIENT_DB_ERRORS as exc:
                log.warning("sent messages not stored yet, retrying", error=repr(exc),
                            retry_in_s=delay, count=len(batch))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            except Exception:
                if len(batch) == 1:
                    # left 'sending': after the claim and the confirm wait, a status callback
                    # confirms it (as when the sender dies)
                    log.exception("sent message not stored", wamid=batch[0][0].wamid,
                                  request_id=str(batch[0][0].request_id))
                    return True
                # not the database being away: one at a time, so one bad row cannot keep the
                # others unstored
                log.exception("sent messages not stored together, storing one at a time",
                              count=len(batch))
                due = False
                for item in batch:
                    due = await self._store([item]) or due
                return due


async def _deliver(
    rt: Runtime, client: WhatsAppClient, row: asyncpg.Record, token: uuid.UUID, stores: SentStore
) -> None:
    try:
        await send_one(rt, client, row, token, stores.put)
    except TRANSIENT_DB_ERRORS as exc:
        # the claim runs out and the row is looked at again (a status callback may settle it)
        log.warning("notification state not stored, it will be looked at again", error=repr(exc),
                    request_id=str(row["request_id"]))
    except Exception:
        log.exception("sender error", request_id=str(row["request_id"]))


def _contact(row: asyncpg.Record) -> tuple[str, str]:
    if row["recipient"] == "delivery":
        return row["delivery_phone"], row["delivery_name"]
    return row["phone"], row["name"]


def compose(
    row: asyncpg.Record, now: datetime, margin: timedelta
) -> tuple[str, str, list[str], str]:
    """(kind, template name, template params, text) of a claimed row."""
    _, name = _contact(row)
    recipient = {
        "name": name,
        "tracking_code": row["tracking_code"],
        "document_type": row["document_type"],
        "partner": row["partner"],
        "cod_fee": row["cod_fee"],
        "requirement_documents": json.loads(row["requirement_documents"]),
    }
    event_type = row["event_type"]
    params = params_for(event_type, context(recipient, json.loads(row["event_data"])))
    kind = message_kind(row["last_inbound_at"], now, margin, row["force_template"])
    return kind, TEMPLATES[event_type].name, params, render(event_type, params)


async def send_one(
    rt: Runtime,
    client: WhatsAppClient,
    row: asyncpg.Record,
    token: uuid.UUID,
    store: Callable[[Accepted], None],
) -> None:
    """Send one claimed row; an accepted message goes to ``store`` (``SentStore.put``)."""
    s = rt.settings
    if row["attempts"] > s.send_max_attempts:  # claimed again and again: the sender keeps dying
        await give_up(rt, row, token, "claimed too many times without an answer")
        return
    phone, _ = _contact(row)
    kind, template, params, text = compose(
        row, datetime.now(UTC), timedelta(seconds=s.whatsapp_window_margin_s)
    )
    ref = callback_ref(row["event_id"], row["recipient"])
    try:
        if kind == "text":
            wamid = await client.send_text(phone, text, callback_data=ref)
        else:
            wamid = await client.send_template(phone, template, params, callback_data=ref)
    except WhatsAppError as exc:
        await _failed_attempt(rt, row, token, exc)
        return
    store(Accepted(row["id"], row["request_id"], wamid, kind,
                   template if kind == "template" else None, text))
    log.info("whatsapp sent", request_id=str(row["request_id"]), event_type=row["event_type"],
             recipient=row["recipient"], kind=kind, to=mask_phone(phone), wamid=wamid)


async def _failed_attempt(
    rt: Runtime, row: asyncpg.Record, token: uuid.UUID, exc: WhatsAppError
) -> None:
    s = rt.settings
    attempts = row["attempts"]
    if exc.ambiguous:
        # Maybe accepted: wait for a status callback naming it before sending it again.
        await rt.pool.execute(
            "UPDATE notifications SET status = 'unconfirmed', error = $3, claimed_until = NULL,"
            " claim_token = NULL, next_attempt_at = now() + make_interval(secs => $4)"
            " WHERE id = $1 AND claim_token = $2 AND status = 'sending'",
            row["id"], token, f"no answer ({exc.reason}): waiting for a status callback",
            s.send_confirm_wait_s,
        )
        log.warning("whatsapp send unanswered, waiting for a status callback", reason=exc.reason,
                    wait_s=s.send_confirm_wait_s, request_id=str(row["request_id"]))
    elif exc.transient and attempts < s.send_max_attempts:
        delay = retry_delay(attempts, s.send_retry_start_s, s.send_retry_cap_s)
        await rt.pool.execute(
            "UPDATE notifications SET status = 'pending', error = $3, claimed_until = NULL,"
            " claim_token = NULL, next_attempt_at = now() + make_interval(secs => $4)"
            " WHERE id = $1 AND claim_token = $2 AND status = 'sending'",
            row["id"], token, exc.reason, delay,
        )
        log.warning("whatsapp send failed, will retry", attempts=attempts, retry_in_s=delay,
                    reason=exc.reason, request_id=str(row["request_id"]))
    else:
        reason = f"whatsapp send failed after {attempts} attempt(s): {exc.reason}"
        await give_up(rt, row, token, reason)


async def give_up(rt: Runtime, row: asyncpg.Record, token: uuid.UUID, reason: str) -> None:
    """Mark the notification failed and dead-letter its event, in one transaction.

    The event's inbox row goes too, so that replaying the dead letter is applied (once) and
    re-arms the notification (``events.note_event``).
    """
    async with rt.pool.acquire() as conn, conn.transaction():
        failed = await conn.fetchrow(
            "UPDATE notifications SET status = 'failed', error = $3, claimed_until = NULL,"
            " claim_token = NULL WHERE id = $1 AND claim_token = $2 AND status = 'sending'"
            " RETURNING source",
            row["id"], token, reason,
        )
        if failed is None:
            return
        if failed["source"] is not None:
            await dead_letter_send(conn, rt, row, failed["source"], reason)
    if failed["source"] is not None:
        wake_relay(rt.schema)  # the dead letter is committed: ops see it on its topic at once
    rt.waker("sender").set()  # the recipient's next message is due now
    log.error("whatsapp message given up, dead-lettered", reason=reason,
              request_id=str(row["request_id"]), event_type=row["event_type"])


async def dead_letter_send(
    conn: asyncpg.Connection, rt: Runtime, row: Any, source: str, reason: str
) -> None:
    consumer = rt.settings.consumer_group
    event = parse_event(row["event_type"], source)
    await conn.execute(
        "DELETE FROM inbox WHERE consumer = $1 AND event_id = $2", consumer, row["event_id"]
    )
    headers = event_headers(event) | {
        "dlq-reason": reason[:1000],
        "dlq-original-topic": row["event_type"],
        "dlq-consumer": consumer,
        "dlq-kind": "whatsapp-send",
        "dlq-recipient": row["recipient"],
    }
    await add_record(
        conn,
        record_id=uuid.uuid4(),
        topic=dead_letter_topic(rt.settings.service_name),
        key=str(row["request_id"]),
        value=source.encode(),
        headers=headers,
    )
