-- Intake as the public front door: operators, capacity, WhatsApp conversations, tracking limits,
-- and erasure of personal data after the retention period (the lifecycle record stays).

ALTER TABLE requests
    ALTER COLUMN applicant_name  DROP NOT NULL,
    ALTER COLUMN applicant_nik   DROP NOT NULL,
    ALTER COLUMN applicant_phone DROP NOT NULL,
    -- what public tracking asks for with the code; kept after erasure (4 digits identify nobody)
    ADD COLUMN phone_last4 text,
    -- web | whatsapp | walk_in | phone (the contract's channel has no "phone": it says counter)
    ADD COLUMN intake_via text,
    ADD COLUMN registered_by text,
    ADD COLUMN service_date date,
    ADD COLUMN finished_at timestamptz,
    ADD COLUMN personal_data_erased_at timestamptz;

UPDATE requests SET
    phone_last4 = right(applicant_phone, 4),
    intake_via = CASE channel WHEN 'counter' THEN 'walk_in' ELSE channel END,
    service_date = (created_at AT TIME ZONE 'Asia/Jakarta')::date,
    finished_at = CASE WHEN status IN ('delivered', 'returned_to_office', 'rejected')
                       THEN updated_at END;

ALTER TABLE requests
    ALTER COLUMN phone_last4 SET NOT NULL,
    ALTER COLUMN intake_via SET NOT NULL,
    ALTER COLUMN service_date SET NOT NULL;

CREATE INDEX requests_to_erase ON requests (finished_at)
    WHERE finished_at IS NOT NULL AND personal_data_erased_at IS NULL;

-- Requests taken per office day and document type; a row lock makes "take one if room" atomic.
CREATE TABLE daily_capacity (
    service_date   date    NOT NULL,
    document_type  text    NOT NULL,
    used           integer NOT NULL CHECK (used >= 0),
    PRIMARY KEY (service_date, document_type)
);

-- Operators and their tokens (SHA-256 of a random token: tokens are not passwords, a slow hash
-- buys nothing). Seeded from INTAKE_OPERATORS at start; the environment is the source of truth.
CREATE TABLE operators (
    operator_id  text PRIMARY KEY,
    name         text        NOT NULL DEFAULT '',
    role         text        NOT NULL CHECK (role IN ('operator', 'supervisor')),
    token_sha256 text        NOT NULL UNIQUE,
    active       boolean     NOT NULL DEFAULT true,
    updated_at   timestamptz NOT NULL DEFAULT now()
);

-- Who read an applicant's personal data, and when (UU PDP accountability). No personal data here.
CREATE TABLE personal_data_access (
    id           bigserial PRIMARY KEY,
    operator_id  text        NOT NULL,
    request_id   uuid        NOT NULL,
    action       text        NOT NULL,
    at           timestamptz NOT NULL DEFAULT now()
);

-- One WhatsApp conversation per sender: where it is and what was typed so far (personal data,
-- wiped when the conversation ends or idles past CONVERSATION_TTL_HOURS).
CREATE TABLE wa_conversations (
    wa_id        text PRIMARY KEY,
    state        text        NOT NULL DEFAULT 'idle',
    draft        jsonb       NOT NULL DEFAULT '{}'::jsonb,
    updated_at   timestamptz NOT NULL DEFAULT now()
);

-- Inbound message ids already handled: Meta redelivers, possibly for days.
CREATE TABLE wa_inbound (
    wamid        text PRIMARY KEY,
    received_at  timestamptz NOT NULL DEFAULT now()
);

-- Replies to send, written in the transaction that decided them; a loop sends them.
CREATE TABLE wa_outbound (
    id               bigserial PRIMARY KEY,
    wa_id            text        NOT NULL,
    body             text        NOT NULL,
    status           text        NOT NULL DEFAULT 'pending'
                                 CHECK (status IN ('pending', 'sent', 'failed')),
    attempts         integer     NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    claimed_until    timestamptz,
    wamid            text,
    error            text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    sent_at          timestamptz
);
CREATE INDEX wa_outbound_due ON wa_outbound (next_attempt_at) WHERE status = 'pending';

-- Fixed-window counters for rate limits (tracking lookups, STATUS guesses on WhatsApp).
CREATE TABLE rate_limit_hits (
    bucket        text        NOT NULL,
    window_start  timestamptz NOT NULL,
    hits          integer     NOT NULL,
    PRIMARY KEY (bucket, window_start)
);
