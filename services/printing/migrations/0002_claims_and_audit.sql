-- Why a job was sent back (a category the applicant is told, besides the operator's words).
ALTER TABLE print_jobs ADD COLUMN reject_code text;
ALTER TABLE print_jobs ADD COLUMN rejected_at timestamptz;

-- Every operator action on a job, refused ones included: who tried what, when, and what came of it.
CREATE TABLE print_job_actions (
    id          bigserial PRIMARY KEY,
    request_id  uuid        NOT NULL,
    action      text        NOT NULL,  -- claim | release | print | reject
    operator    text        NOT NULL,
    outcome     text        NOT NULL,  -- done | no_op | refused
    detail      text,
    at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX print_job_actions_job ON print_job_actions (request_id, id);
CREATE INDEX print_jobs_claimed_by ON print_jobs (claimed_by) WHERE status = 'claimed';
