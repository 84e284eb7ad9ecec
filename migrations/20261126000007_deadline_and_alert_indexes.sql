-- The sweep looks for grants near their inactivity expiry on every tick, and for open
-- alerts by grant and kind; both stay index lookups at any number of grants.
CREATE INDEX grants_refresh_idle_deadline ON grants (refresh_idle_deadline)
    WHERE status IN ('active', 'degraded');
CREATE INDEX alerts_open_by_grant ON alerts (grant_id, kind) WHERE resolved_at IS NULL;
