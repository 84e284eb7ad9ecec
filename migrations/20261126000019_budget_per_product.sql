-- Atlassian's points quota is per app *and product*: Jira and Confluence each have their own
-- hourly pool (429 reasons `jira-quota-global-based` and `confluence-quota-global-based`), so
-- the spend and the quota pause are kept per (hour, product).
--
-- Existing rows cannot be told apart, so:
-- * their spend becomes Jira's: Jira is nearly all of it (a point per issue, every five
--   minutes, and the daily census), Confluence lists a few spaces an hour. Only the hour of
--   the upgrade is affected, and Atlassian's `RateLimit` header corrects it near the wall;
-- * a pause is kept for both products: it may have come from either one's 429, and before
--   this upgrade it held both. Pauses end within two hours of being set.
ALTER TABLE api_budget
    ADD COLUMN product text NOT NULL DEFAULT 'jira' CHECK (product IN ('jira', 'confluence'));
ALTER TABLE api_budget ALTER COLUMN product DROP DEFAULT;
ALTER TABLE api_budget DROP CONSTRAINT api_budget_pkey;
ALTER TABLE api_budget ADD PRIMARY KEY (hour_start, product);

INSERT INTO api_budget (hour_start, product, points_used, paused_until)
SELECT hour_start, 'confluence', 0, paused_until FROM api_budget WHERE paused_until IS NOT NULL;
