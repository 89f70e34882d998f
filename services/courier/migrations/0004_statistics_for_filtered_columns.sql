-- ANALYZE only the columns that queries filter, join or sort on. Autovacuum re-analyses a busy
-- table every few thousand changes (every 10 s round: autovacuum_naptime, compose and
-- deploy/local), and it computed statistics for every column, names, addresses and JSON included
-- (bench/README.md, tenth round). The planner never estimates these columns; a query that starts
-- filtering on one of them should set its statistics back (SET STATISTICS -1).
ALTER TABLE shipments
    ALTER COLUMN correlation_id SET STATISTICS 0,
    ALTER COLUMN recipient_name SET STATISTICS 0,
    ALTER COLUMN recipient_phone SET STATISTICS 0,
    ALTER COLUMN address SET STATISTICS 0,
    ALTER COLUMN cod_fee SET STATISTICS 0,
    ALTER COLUMN document_number SET STATISTICS 0,
    ALTER COLUMN booking_attempts SET STATISTICS 0,
    ALTER COLUMN booking_error SET STATISTICS 0,
    ALTER COLUMN cod_amount_collected SET STATISTICS 0,
    ALTER COLUMN received_by SET STATISTICS 0,
    ALTER COLUMN documents_collected SET STATISTICS 0,
    ALTER COLUMN failed_attempts SET STATISTICS 0,
    ALTER COLUMN requirement_documents SET STATISTICS 0,
    ALTER COLUMN cancel_reason SET STATISTICS 0,
    ALTER COLUMN last_failure_reason SET STATISTICS 0,
    ALTER COLUMN return_reason SET STATISTICS 0,
    ALTER COLUMN originals_received_by SET STATISTICS 0,
    ALTER COLUMN originals_missing SET STATISTICS 0;
