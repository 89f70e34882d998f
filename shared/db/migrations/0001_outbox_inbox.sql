-- Plumbing tables every service has in its own schema (DESIGN.md section 3).

-- Events waiting to be published; written in the same transaction as the state change.
-- The relay publishes rows in id order and deletes them once Kafka acknowledged (acks=all).
CREATE TABLE IF NOT EXISTS outbox (
    id          bigserial PRIMARY KEY,
    event_id    uuid        NOT NULL UNIQUE,
    topic       text        NOT NULL,
    key         text        NOT NULL,
    value       bytea       NOT NULL,
    headers     jsonb       NOT NULL DEFAULT '{}'::jsonb,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Events already applied by a consumer of this service: the duplicate detector.
CREATE TABLE IF NOT EXISTS inbox (
    consumer     text        NOT NULL,
    event_id     uuid        NOT NULL,
    topic        text        NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
);

-- Messages this service could never process; they are also published to its dead-letter topic.
CREATE TABLE IF NOT EXISTS dead_letter (
    id          bigserial PRIMARY KEY,
    topic       text        NOT NULL,
    partition   integer     NOT NULL,
    "offset"    bigint      NOT NULL,
    key         bytea,
    value       bytea,
    reason      text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (topic, partition, "offset")
);
