-- The sender's claim (pending -> sending) and its retries move a row between unsent statuses only.
-- The two partial indexes named `status` in their predicates, and PostgreSQL cannot update a row
-- in place (a HOT update: no new index entries) when a column an index uses changes, its
-- predicate's included. So every claim wrote a new entry into each of the table's six indexes:
-- ~9 WAL records and ~110 buffer hits per claimed message, the heaviest statement of the
-- pipeline (bench/README.md, fifteenth round). The predicates now name `unsent`, which a claim
-- does not change, and pages keep room for the claimed version: with half of each page free
-- (fillfactor) nearly every claim is a HOT update (70: about 60% of them).
-- `unsent` is derived from `status`, never written: queries say `unsent` to use these indexes.
-- Adding a stored generated column rewrites the table once, under an exclusive lock: notify's
-- consumer and sender wait for it (seconds for a few hundred thousand rows). The fillfactor is
-- set first, so that the rewrite lays the existing rows out with that room too. Instances still
-- on the code before claim without these indexes (a scan and a sort) until they are replaced.
ALTER TABLE notifications SET (fillfactor = 50);
ALTER TABLE notifications
    ADD COLUMN unsent boolean NOT NULL
        GENERATED ALWAYS AS (status IN ('pending', 'sending', 'unconfirmed')) STORED;
DROP INDEX notifications_due_in_order;
CREATE INDEX notifications_due_in_order ON notifications (next_attempt_at, occurred_at)
    WHERE unsent AND next_attempt_at IS NOT NULL;
DROP INDEX notifications_unsent_by_recipient;
CREATE INDEX notifications_unsent_by_recipient ON notifications (request_id, recipient, occurred_at)
    WHERE unsent;
-- A message has a wamid only once it is sent: the unsent ones need no entry in its index.
ALTER TABLE notifications DROP CONSTRAINT notifications_wamid_key;
CREATE UNIQUE INDEX notifications_wamid ON notifications (wamid) WHERE wamid IS NOT NULL;
