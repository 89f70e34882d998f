-- register_request (0004_register_in_one_call.sql, whose comments explain it) without its
-- pg_notify, and so without the p_outbox_channel parameter: the caller wakes the outbox relay
-- after the commit (shared.outbox.wake_relay).
--
-- Why: PostgreSQL serialises every committing transaction that has notified, in the whole
-- cluster, on one lock held until its commit record is flushed. Registrations, prints and partner
-- callbacks of all four services committed one at a time (bench/README.md, thirteenth round).
--
-- 0004's function (one parameter more) stays, for an intake of the previous version still running
-- during an upgrade; the two differ in their number of parameters, so each call finds its own.
CREATE FUNCTION register_request(
    p_lock_key text,            -- serialises registrations of one (applicant, document type)
    p_idempotency_key text,     -- scoped; NULL: no replay lookup
    p_open_nik text,            -- NULL: no open-request lookup (a document about another person)
    p_document_type text,
    p_service_date date,
    p_quota integer,
    p_enforce_quota boolean,    -- false: counted, never refused (operators at the counter)
    p_request_id uuid,
    p_tracking_code text,
    p_channel text,
    p_applicant_name text,
    p_applicant_nik text,
    p_applicant_phone text,
    p_delivery jsonb,
    p_cod_fee integer,
    p_requirement_documents jsonb,
    p_correlation_id text,
    p_body_hash text,
    p_intake_via text,
    p_registered_by text,
    p_event_id uuid,            -- the request-registered event: its timeline entry ...
    p_event_type text,
    p_occurred_at timestamptz,
    p_timeline_detail jsonb,
    p_outbox_event_ids uuid[],  -- ... and its outbox row, as shared.outbox.queue_args gives them
    p_outbox_topics text[],
    p_outbox_keys text[],
    p_outbox_values bytea[],
    p_outbox_headers text[]
) RETURNS TABLE (
    outcome text, request_id uuid, tracking_code text, status text, applicant_phone text,
    body_hash text, document_type text, cod_fee integer, requirement_documents jsonb,
    service_date date, delivery jsonb
) LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended(p_lock_key, 0));

    IF p_idempotency_key IS NOT NULL THEN
        RETURN QUERY
            SELECT 'replay', r.request_id, r.tracking_code, r.status, r.applicant_phone,
                r.body_hash, r.document_type, r.cod_fee, r.requirement_documents, r.service_date,
                r.delivery
            FROM requests r WHERE r.idempotency_key = p_idempotency_key;
        IF FOUND THEN
            RETURN;
        END IF;
    END IF;

    IF p_open_nik IS NOT NULL THEN
        RETURN QUERY
            SELECT 'open', r.request_id, r.tracking_code, r.status, r.applicant_phone,
                r.body_hash, r.document_type, r.cod_fee, r.requirement_documents, r.service_date,
                r.delivery
            FROM requests r
            WHERE r.applicant_nik = p_open_nik AND r.document_type = p_document_type
                AND r.status NOT IN ('delivered', 'returned_to_office', 'rejected')
            ORDER BY r.created_at LIMIT 1;
        IF FOUND THEN
            RETURN;
        END IF;
    END IF;

    IF p_enforce_quota AND p_quota <= 0 THEN
        RETURN QUERY SELECT 'quota_full', NULL::uuid, NULL, NULL, NULL, NULL, NULL, NULL::integer,
            NULL::jsonb, NULL::date, NULL::jsonb;
        RETURN;
    END IF;
    INSERT INTO daily_capacity AS d (service_date, document_type, used)
    VALUES (p_service_date, p_document_type, 1)
    ON CONFLICT (service_date, document_type) DO UPDATE SET used = d.used + 1
        WHERE NOT p_enforce_quota OR d.used < p_quota;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'quota_full', NULL::uuid, NULL, NULL, NULL, NULL, NULL, NULL::integer,
            NULL::jsonb, NULL::date, NULL::jsonb;
        RETURN;
    END IF;

    INSERT INTO requests (request_id, tracking_code, document_type, channel, applicant_name,
        applicant_nik, applicant_phone, delivery, cod_fee, requirement_documents, status,
        correlation_id, idempotency_key, body_hash, phone_last4, intake_via, registered_by,
        service_date)
    VALUES (p_request_id, p_tracking_code, p_document_type, p_channel, p_applicant_name,
        p_applicant_nik, p_applicant_phone, p_delivery, p_cod_fee, p_requirement_documents,
        'registered', p_correlation_id, p_idempotency_key, p_body_hash, right(p_applicant_phone, 4),
        p_intake_via, p_registered_by, p_service_date)
    ON CONFLICT (tracking_code) DO NOTHING;
    IF NOT FOUND THEN
        -- 40 random bits clashed with an earlier code: give the place back, write nothing
        UPDATE daily_capacity d SET used = d.used - 1
        WHERE d.service_date = p_service_date AND d.document_type = p_document_type;
        RETURN QUERY SELECT 'tracking_code_taken', NULL::uuid, NULL, NULL, NULL, NULL, NULL,
            NULL::integer, NULL::jsonb, NULL::date, NULL::jsonb;
        RETURN;
    END IF;
    INSERT INTO request_timeline (request_id, event_id, event_type, occurred_at, detail)
    VALUES (p_request_id, p_event_id, p_event_type, p_occurred_at, p_timeline_detail);
    -- the same rows as shared/outbox.py's queue_cte writes (the caller wakes the relay)
    INSERT INTO outbox (event_id, topic, key, value, headers)
    SELECT e, t, k, v, h::jsonb
    FROM unnest(p_outbox_event_ids, p_outbox_topics, p_outbox_keys, p_outbox_values,
        p_outbox_headers) WITH ORDINALITY AS x(e, t, k, v, h, n)
    ORDER BY n;

    RETURN QUERY SELECT 'registered', p_request_id, p_tracking_code, 'registered', NULL, NULL,
        NULL, NULL::integer, NULL::jsonb, NULL::date, NULL::jsonb;
END
$$;
