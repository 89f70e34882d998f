-- ANALYZE only the columns that queries filter, join or sort on. Autovacuum re-analyses a busy
-- table every few thousand changes (every 10 s round: autovacuum_naptime, compose and
-- deploy/local), and it computed statistics for every column, names, addresses and JSON included
-- (bench/README.md, tenth round). The planner never estimates these columns; a query that starts
-- filtering on one of them should set its statistics back (SET STATISTICS -1).
ALTER TABLE print_jobs
    ALTER COLUMN applicant_name SET STATISTICS 0,
    ALTER COLUMN correlation_id SET STATISTICS 0,
    ALTER COLUMN reject_reason SET STATISTICS 0,
    ALTER COLUMN operator SET STATISTICS 0;
