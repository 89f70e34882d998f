-- Who to tell about a request (from request-registered). Personal data: deleted with retention.
CREATE TABLE recipients (
    request_id             uuid PRIMARY KEY,
    phone                  text    NOT NULL,
    name                   text    NOT NULL,
    tracking_code          text    NOT NULL,
    document_type          text    NOT NULL,
    partner                text    NOT NULL,
    cod_fee                integer NOT NULL,
    requirement_documents  jsonb   NOT NULL,
    registered_at          timestamptz NOT NULL
);

-- One message per event; written with the event's inbox row, sent by the sender loop.
-- pending -> sending (claimed) -> sent | failed
CREATE TABLE notifications (
    id               bigserial PRIMARY KEY,
    event_id         uuid        NOT NULL UNIQUE,
    request_id       uuid        NOT NULL,
    event_type       text        NOT NULL,
    occurred_at      timestamptz NOT NULL,
    event_data       jsonb       NOT NULL,
    status           text        NOT NULL DEFAULT 'pending',
    attempts         integer     NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    claimed_until    timestamptz,
    template         text,
    body             text,
    wamid            text UNIQUE,
    error            text,
    sent_at          timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX notifications_due ON notifications (next_attempt_at) WHERE status IN ('pending', 'sending');
CREATE INDEX notifications_by_request ON notifications (request_id);
