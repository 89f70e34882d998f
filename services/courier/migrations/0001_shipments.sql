CREATE TABLE shipments (
    request_id            uuid PRIMARY KEY,
    correlation_id        text        NOT NULL,
    -- known from request-registered
    registered            boolean     NOT NULL DEFAULT false,
    partner               text,
    document_type         text,
    recipient_name        text,
    recipient_phone       text,
    address               jsonb,
    cod_fee               integer CHECK (cod_fee >= 0),
    -- known from document-printed
    printed_at            timestamptz,
    document_number       text,
    -- awaiting_print | awaiting_registration | to_book | booking_failed | booked |
    -- handed_to_courier | cod_paid | delivered | delivery_failed | completed | returned_to_office
    status                text        NOT NULL,
    booking_attempts      integer     NOT NULL DEFAULT 0,
    next_booking_at       timestamptz NOT NULL DEFAULT now(),
    booking_claimed_until timestamptz,
    booking_error         text,
    waybill               text UNIQUE,
    booked_at             timestamptz,
    handed                boolean     NOT NULL DEFAULT false,
    handed_at             timestamptz,
    cod_paid              boolean     NOT NULL DEFAULT false,
    cod_amount_collected  integer,
    cod_paid_at           timestamptz,
    delivered             boolean     NOT NULL DEFAULT false,
    delivered_at          timestamptz,
    received_by           text,
    documents_collected   boolean,
    failed_attempts       integer     NOT NULL DEFAULT 0,
    returned              boolean     NOT NULL DEFAULT false,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX shipments_to_book ON shipments (next_booking_at) WHERE status = 'to_book';

-- Partner callbacks already applied, on the partner's own event id: duplicates are skipped.
CREATE TABLE partner_callbacks (
    partner_event_id text PRIMARY KEY,
    partner          text        NOT NULL,
    waybill          text        NOT NULL,
    kind             text        NOT NULL,
    occurred_at      timestamptz NOT NULL,
    received_at      timestamptz NOT NULL DEFAULT now()
);

-- Facts that did not fit the shipment's state, and COD amounts that differ from the fee.
CREATE TABLE shipment_anomalies (
    id           bigserial PRIMARY KEY,
    request_id   uuid        NOT NULL,
    waybill      text,
    detail       text        NOT NULL,
    recorded_at  timestamptz NOT NULL DEFAULT now()
);
