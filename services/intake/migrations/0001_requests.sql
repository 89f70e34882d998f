CREATE TABLE requests (
    request_id            uuid PRIMARY KEY,
    tracking_code         text        NOT NULL UNIQUE,
    document_type         text        NOT NULL,
    channel               text        NOT NULL,
    applicant_name        text        NOT NULL,
    applicant_nik         text        NOT NULL,
    applicant_phone       text        NOT NULL,
    delivery              jsonb       NOT NULL,
    cod_fee               integer     NOT NULL CHECK (cod_fee >= 0),
    requirement_documents jsonb       NOT NULL,
    status                text        NOT NULL,
    cod_paid              boolean     NOT NULL DEFAULT false,
    correlation_id        text        NOT NULL,
    idempotency_key       text        UNIQUE,
    body_hash             text,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX requests_open_by_applicant ON requests (applicant_nik, document_type)
    WHERE status NOT IN ('delivered', 'returned_to_office', 'rejected');

-- What happened to a request, in the order intake learnt it; no personal data in `detail`.
CREATE TABLE request_timeline (
    id           bigserial PRIMARY KEY,
    request_id   uuid        NOT NULL REFERENCES requests (request_id),
    event_id     uuid        NOT NULL UNIQUE,
    event_type   text        NOT NULL,
    occurred_at  timestamptz NOT NULL,
    detail       jsonb       NOT NULL DEFAULT '{}'::jsonb,
    note         text,
    recorded_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX request_timeline_by_request ON request_timeline (request_id, occurred_at);
