-- Retention (UU PDP; services/notify/retention.py): once every message of a request is final and
-- the newest is older than the retention period, the recipients' names and phones and the
-- messages' text, event data, consumed event and error texts are erased. The messages stay:
-- event type, recipient role, status, kind, template, wamid, WhatsApp status, attempts, times.
ALTER TABLE recipients ALTER COLUMN phone DROP NOT NULL;
ALTER TABLE recipients ALTER COLUMN name DROP NOT NULL;
ALTER TABLE recipients ADD COLUMN personal_data_erased_at timestamptz;
ALTER TABLE notifications ALTER COLUMN event_data DROP NOT NULL;
ALTER TABLE notifications ADD COLUMN personal_data_erased_at timestamptz;
-- requests not yet erased, oldest first: what each retention batch reads
CREATE INDEX recipients_to_erase ON recipients (registered_at)
    WHERE personal_data_erased_at IS NULL;
-- conversations only serve the 24-hour window: deleted a few days after the applicant's last
-- message; status callbacks as received, after the retention period
CREATE INDEX conversations_by_last_inbound ON conversations (last_inbound_at);
CREATE INDEX whatsapp_statuses_by_received ON whatsapp_statuses (received_at);
