-- A partner's pickup and COD callbacks change a shipment's status, its handed / cod_paid flags and
-- times, and `updated_at`. Two indexes used those columns: `shipments_to_book` named `status` in
-- its predicate, and `shipments_to_erase` was on `updated_at` with `status` in its predicate.
-- PostgreSQL updates a row in place (a HOT update: no new index entries) only when no column an
-- index uses changes, its predicate's included; so every callback wrote a new entry into each of
-- the table's seven indexes (with notify's claim, migration notify/0007, the same finding).
-- The two indexes now use stored generated columns that those callbacks do not change:
--   `bookable`: status = 'to_book' (the booking worker's queue);
--   `erasable_since`: `updated_at` once the shipment is over with no originals owed and not yet
--   erased, else NULL (retention.py: erased `PERSONAL_DATA_RETENTION_DAYS` after its last change).
-- Both are derived, never written: queries say `bookable` and `erasable_since` to use these
-- indexes. Pages keep room for the new version (fillfactor 70). The booking's store (a waybill,
-- indexed) and the delivery (`delivered_at`, the originals' status, both indexed) still write
-- index entries; the booking's claim, the pickup and the COD no longer do.
-- Adding stored generated columns rewrites the table once, under an exclusive lock: courier's
-- consumer, booking worker and webhooks wait for it (seconds for a few hundred thousand rows). The
-- fillfactor is set first, so that the rewrite lays the existing rows out with that room too.
-- Instances still on the code before book and erase without these indexes until replaced (and
-- code rolled back to before this migration stays without them: it names `status` and
-- `updated_at`; its queries still answer right, by scanning).
ALTER TABLE shipments SET (fillfactor = 70);
ALTER TABLE shipments
    ADD COLUMN bookable boolean NOT NULL GENERATED ALWAYS AS (status = 'to_book') STORED,
    ADD COLUMN erasable_since timestamptz GENERATED ALWAYS AS (
        CASE WHEN status IN ('delivered', 'completed', 'returned_to_office', 'cancelled')
                  AND originals_status IN ('none', 'received')
                  AND personal_data_erased_at IS NULL
             THEN updated_at END) STORED;
DROP INDEX shipments_to_book;
CREATE INDEX shipments_to_book ON shipments (next_booking_at) WHERE bookable;
DROP INDEX shipments_to_erase;
CREATE INDEX shipments_to_erase ON shipments (erasable_since) WHERE erasable_since IS NOT NULL;
