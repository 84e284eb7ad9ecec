-- Sync that stays right against the real API.

-- A run that read only part of a listing ends 'incomplete' (its rows are kept, the watermark
-- moves only as far as they prove, nothing is deleted on its evidence). Reconciliation says
-- what it added (listed by Atlassian, missing here), refreshed (restored rows re-read) and
-- held (deletions waiting for an operator); rows that could not be stored are quarantined.
ALTER TABLE sync_runs DROP CONSTRAINT sync_runs_outcome_check;
ALTER TABLE sync_runs ADD CONSTRAINT sync_runs_outcome_check
    CHECK (outcome IN ('running', 'ok', 'failed', 'deferred', 'incomplete'));
ALTER TABLE sync_runs
    ADD COLUMN added       integer NOT NULL DEFAULT 0,
    ADD COLUMN refreshed   integer NOT NULL DEFAULT 0,
    ADD COLUMN held        integer NOT NULL DEFAULT 0,
    ADD COLUMN quarantined integer NOT NULL DEFAULT 0;

-- A deletion larger than sync.max_delete_fraction of a site's live rows waits here until an
-- operator confirms it (`atlassync sync --confirm-deletes CLOUD_ID`).
ALTER TABLE synced_sites
    ADD COLUMN deletes_held          integer,
    ADD COLUMN deletes_held_at       timestamptz,
    ADD COLUMN deletes_confirmed_at  timestamptz;

ALTER TABLE alerts DROP CONSTRAINT alerts_kind_check;
ALTER TABLE alerts ADD CONSTRAINT alerts_kind_check CHECK (kind IN
    ('needs_reauth', 'family_expiring', 'site_revoked', 'scopes_missing', 'degraded',
     'no_sites', 'inactivity_expiring', 'app_credentials_rejected', 'reauth_breaker',
     'sync_stale', 'delivery_failing', 'deletes_held', 'query_rejected'));

-- Issues whose row Postgres refused even after cleaning (one bad value never stops a site).
CREATE TABLE jira_issue_quarantine (
    cloud_id      text NOT NULL,
    issue_id      text NOT NULL,
    issue_key     text,
    error         text NOT NULL,
    raw           text NOT NULL,
    first_seen_at timestamptz NOT NULL,
    last_seen_at  timestamptz NOT NULL,
    PRIMARY KEY (cloud_id, issue_id)
);

-- What most reports group by, typed; `raw` keeps every navigable field.
ALTER TABLE jira_issues
    ADD COLUMN status_category     text,
    ADD COLUMN priority            text,
    ADD COLUMN resolution          text,
    ADD COLUMN resolved_at         timestamptz,
    ADD COLUMN reporter_account_id text,
    ADD COLUMN parent_key          text,
    ADD COLUMN labels              text[];

-- Field names, so reports can say "Story point estimate" rather than customfield_10016.
CREATE TABLE jira_fields (
    cloud_id    text NOT NULL,
    field_id    text NOT NULL,
    name        text NOT NULL,
    custom      boolean NOT NULL,
    schema_type text,
    raw         jsonb NOT NULL,
    synced_at   timestamptz NOT NULL,
    PRIMARY KEY (cloud_id, field_id)
);

-- Reporting databases subscribe to jira_fields too (the guard of 20261126000013).
DO $$
DECLARE
    statement text := format('ALTER PUBLICATION atlassync_reporting ADD TABLE %I.jira_fields',
                             current_schema());
    done boolean := EXISTS (SELECT FROM pg_publication_tables
                            WHERE pubname = 'atlassync_reporting'
                              AND schemaname = current_schema() AND tablename = 'jira_fields');
BEGIN
    IF NOT done THEN
        EXECUTE statement;
    END IF;
EXCEPTION WHEN insufficient_privilege OR undefined_object THEN
    RAISE NOTICE 'publication atlassync_reporting not changed (%). For downstream reporting, '
                 'a database administrator should run in database %: %;',
                 SQLERRM, quote_ident(current_database()), statement;
END $$;
