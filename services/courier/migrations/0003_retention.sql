-- Retention (UU PDP; services/courier/retention.py): once a shipment is over (delivered,
-- completed, returned to the office or cancelled) with no originals still owed (none, or all
-- received) and the retention period has passed, the recipient's name, phone and address, the
-- name of whoever signed at the door and the free-text reasons are erased, and so is the free text
-- of its custody trail. The shipment (status, partner, waybill, COD, times) stays. The erased
-- columns are all nullable already: no NOT NULL to drop.
ALTER TABLE shipments ADD COLUMN personal_data_erased_at timestamptz;
-- shipments whose purpose ended, not yet erased, oldest first: what each retention batch reads
CREATE INDEX shipments_to_erase ON shipments (updated_at)
    WHERE status IN ('delivered', 'completed', 'returned_to_office', 'cancelled')
      AND originals_status IN ('none', 'received') AND personal_data_erased_at IS NULL;
-- custody steps still holding free text (the erasure of erased shipments' ones reads these)
CREATE INDEX originals_custody_to_erase ON originals_custody (request_id) WHERE detail IS NOT NULL;
