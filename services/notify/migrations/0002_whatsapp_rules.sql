-- WhatsApp rules (services/notify/README.md): one message per event and recipient, the 24-hour
-- window, status callbacks, and dead letters for sends that keep failing.

-- The person at the door when it is not the applicant (e.g. the family receiving a death
-- certificate); NULL when it is the applicant. Personal data: deleted with the recipient.
ALTER TABLE recipients
    ADD COLUMN delivery_name  text,
    ADD COLUMN delivery_phone text;

-- pending -> sending (claimed) -> sent | unconfirmed (no answer: wait for a status callback,
-- then send again) | failed (given up: dead-lettered).
ALTER TABLE notifications
    ADD COLUMN recipient      text    NOT NULL DEFAULT 'applicant',  -- applicant | delivery
    ADD COLUMN kind           text,                                   -- template | text, when sent
    ADD COLUMN force_template boolean NOT NULL DEFAULT false,         -- free text was refused
    ADD COLUMN claim_token    uuid,
    -- The event as consumed, kept until the message is sent: what a dead letter republishes.
    ADD COLUMN source         text,
    -- What WhatsApp says became of the message (status callbacks): sent | delivered | read | failed
    ADD COLUMN wa_status      text,
    ADD COLUMN wa_status_at   timestamptz,
    ADD COLUMN wa_error       text;

ALTER TABLE notifications DROP CONSTRAINT notifications_event_id_key;
ALTER TABLE notifications ADD CONSTRAINT notifications_one_per_event_and_recipient
    UNIQUE (event_id, recipient);
DROP INDEX notifications_due;
CREATE INDEX notifications_due ON notifications (next_attempt_at)
    WHERE status IN ('pending', 'sending', 'unconfirmed');
-- Messages of one recipient go out in the order of their facts: the earlier unsent ones first.
CREATE INDEX notifications_unsent_by_recipient ON notifications (request_id, recipient, occurred_at)
    WHERE status IN ('pending', 'sending', 'unconfirmed');

-- Status callbacks as received. Meta repeats and reorders them: (wamid, status) collapses the
-- repeats; the notification keeps the furthest status (services/notify/domain.py).
CREATE TABLE whatsapp_statuses (
    wamid          text        NOT NULL,
    status         text        NOT NULL,
    occurred_at    timestamptz NOT NULL,
    callback_data  text,
    errors         jsonb       NOT NULL DEFAULT '[]'::jsonb,
    received_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (wamid, status)
);

-- When each applicant last wrote to us: within 24 hours of it WhatsApp allows free text.
CREATE TABLE conversations (
    wa_id            text        PRIMARY KEY,
    last_inbound_at  timestamptz NOT NULL
);
