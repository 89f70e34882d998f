-- Issue 4: bookings that wait for a partner, failures and returns, originals, COD reconciliation.

ALTER TABLE shipments ADD COLUMN requirement_documents jsonb NOT NULL DEFAULT '[]'::jsonb;
-- When the shipment became bookable: transient booking failures are retried until a deadline.
ALTER TABLE shipments ADD COLUMN to_book_since timestamptz;
UPDATE shipments SET to_book_since = updated_at WHERE status = 'to_book';
ALTER TABLE shipments ADD COLUMN cancelled_at timestamptz;
ALTER TABLE shipments ADD COLUMN cancel_reason text;
ALTER TABLE shipments ADD COLUMN last_failure_reason text;
ALTER TABLE shipments ADD COLUMN last_failed_at timestamptz;
ALTER TABLE shipments ADD COLUMN returned_at timestamptz;
ALTER TABLE shipments ADD COLUMN return_reason text;

-- The originals (requirement documents) collected at the door, until the office has them.
-- awaiting_delivery | with_courier | unconfirmed | not_collected | received | received_incomplete | none
ALTER TABLE shipments ADD COLUMN originals_status text NOT NULL DEFAULT 'awaiting_delivery';
ALTER TABLE shipments ADD COLUMN originals_due_at timestamptz;
ALTER TABLE shipments ADD COLUMN originals_received_at timestamptz;
ALTER TABLE shipments ADD COLUMN originals_received_by text;
ALTER TABLE shipments ADD COLUMN originals_missing jsonb;
UPDATE shipments SET
    originals_status = CASE WHEN documents_collected IS NULL THEN 'unconfirmed'
                            WHEN documents_collected THEN 'with_courier'
                            ELSE 'not_collected' END,
    originals_due_at = delivered_at + interval '7 days'
WHERE delivered;

CREATE INDEX shipments_by_delivery ON shipments (partner, delivered_at);
CREATE INDEX shipments_by_ready ON shipments (printed_at);
CREATE INDEX shipments_originals ON shipments (originals_status, originals_due_at);

-- Every COD report is kept as the partner sent it, whatever the shipment's state: money is never
-- hidden. times_received counts the partner's resends of the same callback (same event id).
ALTER TABLE partner_callbacks ADD COLUMN request_id uuid;
ALTER TABLE partner_callbacks ADD COLUMN cod_amount integer;
ALTER TABLE partner_callbacks ADD COLUMN times_received integer NOT NULL DEFAULT 1;
ALTER TABLE partner_callbacks ADD COLUMN last_received_at timestamptz;
CREATE INDEX partner_callbacks_cod ON partner_callbacks (partner, waybill, occurred_at)
    WHERE kind = 'cod_collected';
CREATE INDEX partner_callbacks_cod_day ON partner_callbacks (partner, occurred_at)
    WHERE kind = 'cod_collected';

-- Chain of custody of the originals: collected at the door, received at the office.
CREATE TABLE originals_custody (
    id          bigserial PRIMARY KEY,
    request_id  uuid        NOT NULL,
    step        text        NOT NULL,  -- collected_at_door | not_collected | unconfirmed | received_at_office
    actor       text        NOT NULL,  -- the partner's courier (by waybill) or the office staff member
    detail      text,
    at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX originals_custody_request ON originals_custody (request_id, id);

-- Partners' COD settlement files, kept whole; a file imported twice (same sha256) is one import.
CREATE TABLE settlement_imports (
    id           bigserial PRIMARY KEY,
    partner      text        NOT NULL,
    sha256       text        NOT NULL,
    filename     text,
    imported_by  text        NOT NULL,
    lines        integer     NOT NULL,
    imported_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (partner, sha256)
);
CREATE TABLE settlement_lines (
    import_id  bigint      NOT NULL REFERENCES settlement_imports (id),
    line_no    integer     NOT NULL,
    partner    text        NOT NULL,
    waybill    text        NOT NULL,
    amount     integer     NOT NULL,
    paid_at    timestamptz,
    PRIMARY KEY (import_id, line_no)
);
CREATE INDEX settlement_lines_waybill ON settlement_lines (partner, waybill);
CREATE INDEX settlement_lines_paid ON settlement_lines (partner, paid_at);
