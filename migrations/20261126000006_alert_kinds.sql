-- New conditions: a grant that reaches no site for now (kept alive, re-checked), and a
-- refresh token close to Atlassian's 90-day inactivity expiry because keep-alive keeps failing.
ALTER TABLE alerts DROP CONSTRAINT alerts_kind_check;
ALTER TABLE alerts ADD CONSTRAINT alerts_kind_check CHECK (kind IN
    ('needs_reauth', 'family_expiring', 'site_revoked', 'scopes_missing', 'degraded',
     'no_sites', 'inactivity_expiring'));
