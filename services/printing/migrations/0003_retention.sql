-- Retention (UU PDP; services/printing/retention.py): a finished job's applicant name, NIK and the
-- operator's free-text reject reason are erased once the retention period has passed. The job
-- (status, document number, operator, times, reject code) and its audit trail stay.
ALTER TABLE print_jobs ALTER COLUMN applicant_name DROP NOT NULL;
ALTER TABLE print_jobs ALTER COLUMN applicant_nik DROP NOT NULL;
ALTER TABLE print_jobs ADD COLUMN personal_data_erased_at timestamptz;
-- finished jobs not yet erased, oldest first: what each retention batch reads
CREATE INDEX print_jobs_to_erase ON print_jobs (updated_at)
    WHERE status IN ('printed', 'rejected') AND personal_data_erased_at IS NULL;
