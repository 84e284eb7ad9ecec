-- App-level alerts concern no single grant: rejected client credentials (one alert, not one
-- per grant) and the breaker that holds mass re-consent marks.
ALTER TABLE alerts ALTER COLUMN grant_id DROP NOT NULL;
ALTER TABLE alerts DROP CONSTRAINT alerts_kind_check;
ALTER TABLE alerts ADD CONSTRAINT alerts_kind_check CHECK (kind IN
    ('needs_reauth', 'family_expiring', 'site_revoked', 'scopes_missing', 'degraded',
     'no_sites', 'inactivity_expiring', 'app_credentials_rejected', 'reauth_breaker'));

-- The breaker counts re-consent marks of the last minutes.
CREATE INDEX alerts_kind_opened_at ON alerts (kind, opened_at);
