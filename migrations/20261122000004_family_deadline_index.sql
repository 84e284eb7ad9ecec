-- The sweep looks for grants nearing or past their family deadline on every tick; without
-- an index that is a scan of every grant.
CREATE INDEX grants_family_deadline ON grants (family_deadline) WHERE status IN ('active', 'degraded');
