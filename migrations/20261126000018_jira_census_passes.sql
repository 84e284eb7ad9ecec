-- Jira reconciliation in resumable passes. A pass starts with a drift check (Atlassian's
-- approximate count of id ranges against the local count, halving the ranges that differ)
-- and then censuses only the ranges that drifted, or every id with `sync --full`. Each
-- range is censused in id order, and the ids below `next_id` are proven, so a pass cut short
-- by the hour's points budget, a restart or an incomplete listing resumes where it stopped.
CREATE TABLE jira_census_passes (
    cloud_id     text PRIMARY KEY,
    started_at   timestamptz NOT NULL,
    full_census  boolean NOT NULL
);

CREATE TABLE jira_census_ranges (
    cloud_id  text NOT NULL REFERENCES jira_census_passes (cloud_id) ON DELETE CASCADE,
    -- Where the range began: its identity while next_id advances.
    start_id  bigint NOT NULL,
    -- Ids from start_id up to (not including) next_id have been censused.
    next_id   bigint NOT NULL,
    -- Exclusive; NULL: the range has no upper end.
    end_id    bigint,
    PRIMARY KEY (cloud_id, start_id)
);

-- Live rows a census found gone (absent from a consistent bulk fetch, or outside the site's
-- restriction), not yet soft-deleted: they are applied together when a pass ends, through
-- the deletion guard, so a mass vanishing spread over many ranges and hours is still held
-- as one. While held they stay here and are re-checked at the start of every pass.
CREATE TABLE jira_census_vanished (
    cloud_id  text NOT NULL,
    issue_id  text NOT NULL,
    found_at  timestamptz NOT NULL,
    PRIMARY KEY (cloud_id, issue_id)
);
