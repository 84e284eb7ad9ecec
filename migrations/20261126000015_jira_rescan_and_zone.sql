-- A daily wider re-scan catches what index lag beyond the overlap missed; the Jira user's
-- time zone is remembered for a day (per grant) instead of asking /myself on every run.
ALTER TABLE synced_sites
    ADD COLUMN jira_rescanned_at     timestamptz,
    ADD COLUMN jira_time_zone        text,
    ADD COLUMN jira_time_zone_grant  uuid,
    ADD COLUMN jira_time_zone_at     timestamptz;
