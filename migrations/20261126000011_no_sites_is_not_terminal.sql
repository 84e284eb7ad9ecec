-- Grants that an earlier release marked needs_reauth only because accessible-resources
-- listed no site are not dead: they go back to active and are due now, so keep-alive
-- resumes before their inactivity window; revalidation raises no_sites if it still holds.
UPDATE alerts SET resolved_at = now()
WHERE kind = 'needs_reauth' AND resolved_at IS NULL
  AND reason LIKE 'no Jira or Confluence site is accessible to this grant any more%';

UPDATE grants SET status = 'active', status_reason = NULL, status_since = now(),
    next_refresh_at = LEAST(next_refresh_at, now())
WHERE status = 'needs_reauth'
  AND status_reason LIKE 'no Jira or Confluence site is accessible to this grant any more%';
