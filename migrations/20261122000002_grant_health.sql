-- Revalidation claims: each cron tick of schedule.revalidate is done once per grant across
-- replicas; a replica claims a grant by moving this to the tick's instant.
ALTER TABLE grants ADD COLUMN revalidated_for timestamptz;
ALTER TABLE grants ADD COLUMN last_revalidated_at timestamptz;

CREATE INDEX grants_revalidation ON grants (revalidated_for) WHERE status IN ('active', 'degraded');
-- Interrupted exchanges are looked up first.
CREATE INDEX grants_interrupted ON grants (refresh_started_at) WHERE refresh_started_at IS NOT NULL;
