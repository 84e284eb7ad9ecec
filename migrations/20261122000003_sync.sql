-- Sync state per site: one row per (cloud id, product), whichever grants reach it.
CREATE TABLE synced_sites (
    cloud_id                text NOT NULL,
    product                 text NOT NULL CHECK (product IN ('jira', 'confluence')),
    name                    text NOT NULL,
    url                     text NOT NULL,
    -- The grant this site is synced through; re-elected when it stops being healthy.
    elected_grant_id        uuid REFERENCES grants (id) ON DELETE SET NULL,
    -- Set by operators to prefer one grant while it is healthy.
    pinned_grant_id         uuid REFERENCES grants (id) ON DELETE SET NULL,
    elected_at              timestamptz,
    -- Jira: every issue updated before this instant has been committed.
    jira_watermark          timestamptz,
    -- The schedule tick each kind of run last claimed (each tick runs once cluster-wide).
    synced_for              timestamptz,
    reconciled_for          timestamptz,
    last_synced_at          timestamptz,
    last_reconciled_at      timestamptz,
    PRIMARY KEY (cloud_id, product)
);

-- Jira issues as the elected grant sees them. Rows never depend on which grant fetched them.
CREATE TABLE jira_issues (
    cloud_id            text NOT NULL,
    issue_id            text NOT NULL,
    issue_key           text NOT NULL,
    project_key         text,
    summary             text,
    status              text,
    issue_type          text,
    assignee_account_id text,
    created_at          timestamptz,
    updated_at          timestamptz,
    deleted_at          timestamptz,
    raw                 jsonb NOT NULL,
    synced_at           timestamptz NOT NULL,
    PRIMARY KEY (cloud_id, issue_id)
);

CREATE INDEX jira_issues_updated ON jira_issues (cloud_id, updated_at);

CREATE TABLE confluence_spaces (
    cloud_id    text NOT NULL,
    space_id    text NOT NULL,
    space_key   text NOT NULL,
    name        text,
    type        text,
    status      text,
    deleted_at  timestamptz,
    raw         jsonb NOT NULL,
    synced_at   timestamptz NOT NULL,
    PRIMARY KEY (cloud_id, space_id)
);

-- One row per sync run.
CREATE TABLE sync_runs (
    id              bigserial PRIMARY KEY,
    cloud_id        text NOT NULL,
    product         text NOT NULL,
    kind            text NOT NULL CHECK (kind IN ('jira_incremental', 'jira_reconcile', 'confluence_spaces')),
    grant_id        uuid REFERENCES grants (id) ON DELETE SET NULL,
    started_at      timestamptz NOT NULL,
    finished_at     timestamptz,
    duration_ms     bigint,
    outcome         text NOT NULL DEFAULT 'running'
                    CHECK (outcome IN ('running', 'ok', 'failed', 'deferred')),
    error           text,
    upserted        integer NOT NULL DEFAULT 0,
    deleted         integer NOT NULL DEFAULT 0,
    restored        integer NOT NULL DEFAULT 0,
    requests        integer NOT NULL DEFAULT 0,
    points_used     integer NOT NULL DEFAULT 0,
    -- The app's points left in this UTC hour when the run ended.
    points_remaining integer,
    watermark_before timestamptz,
    watermark_after  timestamptz
);

CREATE INDEX sync_runs_by_site ON sync_runs (cloud_id, product, started_at DESC);

-- The app's points spent per UTC hour (Atlassian's quota is per app, across all tenants).
CREATE TABLE api_budget (
    hour_start  timestamptz PRIMARY KEY,
    points_used bigint NOT NULL DEFAULT 0,
    -- Set when Atlassian answered a quota 429: no request until then.
    paused_until timestamptz
);
