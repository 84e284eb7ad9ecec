-- Alert delivery: every transition of an alert (opened, resolved) becomes one message with a
-- delivery id that stays the same across retries, and each message is delivered to every
-- configured sink with its own attempts, lease and acknowledgement.

-- New conditions: a site whose sync keeps failing, and a delivery sink that keeps failing.
ALTER TABLE alerts DROP CONSTRAINT alerts_kind_check;
ALTER TABLE alerts ADD CONSTRAINT alerts_kind_check CHECK (kind IN
    ('needs_reauth', 'family_expiring', 'site_revoked', 'scopes_missing', 'degraded',
     'no_sites', 'inactivity_expiring', 'app_credentials_rejected', 'reauth_breaker',
     'sync_stale', 'delivery_failing'));

-- The old per-alert delivery columns were never written; messages replace them.
DROP INDEX alerts_undelivered;
ALTER TABLE alerts DROP COLUMN delivered_at, DROP COLUMN delivery_attempts,
    DROP COLUMN next_delivery_at, DROP COLUMN last_delivery_error;

-- Open alerts by kind, for the alerts_open gauge.
CREATE INDEX alerts_open_by_kind ON alerts (kind) WHERE resolved_at IS NULL;

-- A message keeps a copy of what it says, so deleting a grant (and its alerts) loses no
-- message still on its way.
CREATE TABLE alert_messages (
    id           bigserial PRIMARY KEY,
    delivery_id  uuid NOT NULL UNIQUE DEFAULT gen_random_uuid(),
    alert_id     bigint NOT NULL,
    state        text NOT NULL CHECK (state IN ('open', 'resolved')),
    kind         text NOT NULL,
    grant_id     uuid,
    account_id   text,
    label        text NOT NULL,
    cloud_id     text,
    product      text,
    reason       text NOT NULL,
    since        timestamptz NOT NULL,
    deadline     timestamptz,
    -- When the transition happened (opened_at or resolved_at).
    at           timestamptz NOT NULL,
    -- Set once a delivery row exists for every sink configured when it was fanned out.
    fanned_out   boolean NOT NULL DEFAULT false
);

CREATE INDEX alert_messages_to_fan_out ON alert_messages (id) WHERE NOT fanned_out;
CREATE INDEX alert_messages_by_alert ON alert_messages (alert_id, id);

CREATE TABLE alert_deliveries (
    message_id       bigint NOT NULL REFERENCES alert_messages (id) ON DELETE CASCADE,
    sink             text NOT NULL CHECK (sink IN ('log', 'webhook', 'jsm')),
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL,
    -- One sender per delivery across replicas: whoever holds an unexpired lease.
    leased_by        text,
    leased_until     timestamptz,
    last_attempt_at  timestamptz,
    last_error       text,
    delivered_at     timestamptz,
    -- What the sink answered on success (an HTTP status, a JSM request id).
    receipt          text,
    PRIMARY KEY (message_id, sink)
);

CREATE INDEX alert_deliveries_due ON alert_deliveries (next_attempt_at) WHERE delivered_at IS NULL;

-- Messages are written by the database itself, in the transaction that opens or resolves the
-- alert: no code path can change an alert without its message.
CREATE FUNCTION alert_message_for_transition() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' OR (OLD.resolved_at IS NULL AND NEW.resolved_at IS NOT NULL) THEN
        INSERT INTO alert_messages (alert_id, state, kind, grant_id, account_id, label, cloud_id,
                                    product, reason, since, deadline, at)
        VALUES (NEW.id,
                CASE WHEN NEW.resolved_at IS NULL THEN 'open' ELSE 'resolved' END,
                NEW.kind, NEW.grant_id, NEW.account_id, NEW.label, NEW.cloud_id, NEW.product,
                NEW.reason, NEW.since, NEW.deadline,
                COALESCE(NEW.resolved_at, NEW.opened_at));
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER alerts_transitions AFTER INSERT OR UPDATE OF resolved_at ON alerts
    FOR EACH ROW EXECUTE FUNCTION alert_message_for_transition();

-- Grants by status, kept exact by a trigger so the metrics scrape reads a handful of rows
-- instead of counting every grant.
CREATE TABLE grant_status_counts (
    status text PRIMARY KEY,
    grants bigint NOT NULL
);

INSERT INTO grant_status_counts (status, grants)
SELECT status, count(*) FROM grants GROUP BY status;

CREATE FUNCTION grant_status_counts_follow() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        UPDATE grant_status_counts SET grants = grants - 1 WHERE status = OLD.status;
    END IF;
    IF TG_OP IN ('UPDATE', 'INSERT') THEN
        INSERT INTO grant_status_counts (status, grants) VALUES (NEW.status, 1)
        ON CONFLICT (status) DO UPDATE SET grants = grant_status_counts.grants + 1;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER grants_count_insert_delete AFTER INSERT OR DELETE ON grants
    FOR EACH ROW EXECUTE FUNCTION grant_status_counts_follow();
CREATE TRIGGER grants_count_status_change AFTER UPDATE OF status ON grants
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION grant_status_counts_follow();
