-- The inbox is pruned once no duplicate of its events can arrive any more (shared/retention.py,
-- INBOX_RETENTION_DAYS): by age, which this index finds without reading the whole table.
-- Appended in time order, so its inserts land on the rightmost page.
CREATE INDEX IF NOT EXISTS inbox_received_at ON inbox (received_at);
