-- Revalidation claims grants in revalidated_for order; without this index every claim sorted
-- every remaining grant. History is pruned by age.
CREATE INDEX grants_revalidation_order ON grants (revalidated_for NULLS FIRST)
    WHERE status IN ('active', 'degraded');
CREATE INDEX alerts_resolved_at ON alerts (resolved_at) WHERE resolved_at IS NOT NULL;
CREATE INDEX sync_runs_started_at ON sync_runs (started_at);
