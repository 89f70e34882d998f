-- notifications_due_in_order is for the claim's ORDER BY only. Its predicate was the same as
-- notifications_unsent_by_recipient's, so the per-recipient lookups (the claim's "no earlier
-- unsent message" and mark_sent's "has a next message") could pick it too: while a backlog grew
-- faster than ANALYZE saw it, the planner took this index as tiny and scanned all of it for each
-- row (5.4 ms per mark_sent_many at 50/s, against 0.1 ms by recipient). next_attempt_at is
-- NOT NULL, so the extra condition changes no row; only a query that compares next_attempt_at
-- (the claim's next_attempt_at <= now()) can use this index now.
DROP INDEX notifications_due_in_order;
CREATE INDEX notifications_due_in_order ON notifications (next_attempt_at, occurred_at)
    WHERE status IN ('pending', 'sending', 'unconfirmed') AND next_attempt_at IS NOT NULL;
