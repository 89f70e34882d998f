-- ANALYZE only the columns that queries filter, join or sort on. Autovacuum re-analyses a busy
-- table every few thousand changes (every 10 s round: autovacuum_naptime, compose and
-- deploy/local), and it computed statistics for every column, names, addresses and JSON included
-- (bench/README.md, tenth round). The planner never estimates these columns; a query that starts
-- filtering on one of them should set its statistics back (SET STATISTICS -1).
ALTER TABLE requests
    ALTER COLUMN applicant_name SET STATISTICS 0,
    ALTER COLUMN applicant_phone SET STATISTICS 0,
    ALTER COLUMN delivery SET STATISTICS 0,
    ALTER COLUMN cod_fee SET STATISTICS 0,
    ALTER COLUMN requirement_documents SET STATISTICS 0,
    ALTER COLUMN correlation_id SET STATISTICS 0,
    ALTER COLUMN body_hash SET STATISTICS 0,
    ALTER COLUMN registered_by SET STATISTICS 0;
ALTER TABLE request_timeline
    ALTER COLUMN detail SET STATISTICS 0,
    ALTER COLUMN note SET STATISTICS 0;
