-- Downstream reporting: the publication `atlassync_reporting`, which reporting databases
-- subscribe to by logical replication.
--
-- Published: jira_issues, confluence_spaces, synced_sites (site names, watermarks, the ids
-- of the elected and pinned grants) and sync_runs. Not published: grants (sealed tokens),
-- and the rest of atlassync's own state: sites (which grant reaches which site, with its
-- scopes: the access map of the grants, not reporting data; synced_sites names the sites),
-- alerts, alert_messages and alert_deliveries (people's labels and account ids, Atlassian's
-- error texts, and signed re-consent links in alert rows written before 20261126000008),
-- oauth_states, spent_invites, presented_refresh_tokens, api_budget and grant_status_counts.
--
-- Updates and deletes replicate by replica identity: every published table has a primary
-- key, which is its default replica identity.
--
-- CREATE PUBLICATION works at any wal_level (a subscriber needs the publisher at
-- wal_level = logical; below that Postgres warns here, harmlessly). It needs CREATE on the
-- database, which a least-privilege or managed-Postgres role may lack: then the migration
-- still succeeds and a NOTICE (logged by atlassync at INFO) gives the statement for an
-- administrator to run.
--
-- A later migration that adds a reporting table copies this block with, in DECLARE:
--     statement text := format('ALTER PUBLICATION atlassync_reporting ADD TABLE %I.new_table',
--                              current_schema());
--     done boolean := EXISTS (SELECT FROM pg_publication_tables
--                             WHERE pubname = 'atlassync_reporting'
--                               AND schemaname = current_schema() AND tablename = 'new_table');
-- (undefined_object: the publication was never created; the administrator's statement then
-- follows the CREATE given by this migration's notice.)
DO $$
DECLARE
    statement text := format('CREATE PUBLICATION atlassync_reporting FOR TABLE '
                             '%1$I.jira_issues, %1$I.confluence_spaces, %1$I.synced_sites, '
                             '%1$I.sync_runs', current_schema());
    done boolean := EXISTS (SELECT FROM pg_publication WHERE pubname = 'atlassync_reporting');
BEGIN
    IF NOT done THEN
        EXECUTE statement;
    END IF;
EXCEPTION WHEN insufficient_privilege OR undefined_object THEN
    RAISE NOTICE 'publication atlassync_reporting not changed (%). For downstream reporting, '
                 'a database administrator should run in database %: %;',
                 SQLERRM, quote_ident(current_database()), statement;
END $$;
