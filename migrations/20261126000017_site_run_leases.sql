-- A site's run is leased: a run longer than its schedule tick is not claimed again by
-- another replica (or this one) while it is still going. The lease is renewed as the run
-- commits and released when it ends; a crashed run's lease lapses.
ALTER TABLE synced_sites
    ADD COLUMN sync_leased_until       timestamptz,
    ADD COLUMN reconcile_leased_until  timestamptz;
