CREATE TABLE print_jobs (
    request_id       uuid PRIMARY KEY,
    tracking_code    text        NOT NULL,
    document_type    text        NOT NULL,
    applicant_name   text        NOT NULL,
    applicant_nik    text        NOT NULL,
    correlation_id   text        NOT NULL,
    status           text        NOT NULL DEFAULT 'queued',
    claimed_by       text,
    claimed_at       timestamptz,
    document_number  text UNIQUE,
    printed_at       timestamptz,
    operator         text,
    reject_reason    text,
    registered_at    timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX print_jobs_queue ON print_jobs (status, registered_at);
