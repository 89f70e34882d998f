-- The sender's claim (services/notify/sender.py) walks the due messages in its ORDER BY and stops
-- at its LIMIT, whatever the backlog; the former single-column index made it sort them all.
CREATE INDEX notifications_due_in_order ON notifications (next_attempt_at, occurred_at)
    WHERE status IN ('pending', 'sending', 'unconfirmed');
DROP INDEX notifications_due;
