-- A tenant-based quota 429 (Atlassian's Tier 2 per-tenant pools) pauses that site and
-- product only, until its reset; every replica honours it.
ALTER TABLE synced_sites ADD COLUMN quota_paused_until timestamptz;
