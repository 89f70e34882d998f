-- ANALYZE only the columns that queries filter, join or sort on. Autovacuum re-analyses this table
-- every few thousand changes (every 10 s round while it is busy: autovacuum_naptime, compose and
-- deploy/local), and it computed statistics for every column, the event's JSON and the message's
-- text included: 0.33 CPU-seconds a time at 25,000 rows, in bursts on a busy machine
-- (bench/README.md, tenth round). The planner never estimates these columns; a query that starts
-- filtering on one of them should set its statistics back (SET STATISTICS -1).
ALTER TABLE notifications
    ALTER COLUMN event_data SET STATISTICS 0,
    ALTER COLUMN body SET STATISTICS 0,
    ALTER COLUMN source SET STATISTICS 0,
    ALTER COLUMN error SET STATISTICS 0,
    ALTER COLUMN wa_error SET STATISTICS 0,
    ALTER COLUMN template SET STATISTICS 0,
    ALTER COLUMN kind SET STATISTICS 0,
    ALTER COLUMN claim_token SET STATISTICS 0,
    ALTER COLUMN force_template SET STATISTICS 0,
    ALTER COLUMN attempts SET STATISTICS 0;
ALTER TABLE recipients
    ALTER COLUMN phone SET STATISTICS 0,
    ALTER COLUMN name SET STATISTICS 0,
    ALTER COLUMN tracking_code SET STATISTICS 0,
    ALTER COLUMN document_type SET STATISTICS 0,
    ALTER COLUMN partner SET STATISTICS 0,
    ALTER COLUMN cod_fee SET STATISTICS 0,
    ALTER COLUMN requirement_documents SET STATISTICS 0,
    ALTER COLUMN delivery_name SET STATISTICS 0,
    ALTER COLUMN delivery_phone SET STATISTICS 0;
