-- Grants: one per Atlassian account that consented to the app. Tokens are sealed
-- (XChaCha20-Poly1305, see src/crypto.rs); no column holds a token in plaintext.
CREATE TABLE grants (
    id                      uuid PRIMARY KEY,
    label                   text NOT NULL,
    -- NULL only while an imported token is being identified (see grants import).
    account_id              text UNIQUE,
    account_name            text,
    account_email           text,
    status                  text NOT NULL DEFAULT 'active'
                            CHECK (status IN ('active', 'degraded', 'needs_reauth', 'disabled')),
    status_reason           text,
    status_since            timestamptz NOT NULL,
    scopes                  text[] NOT NULL DEFAULT '{}',

    refresh_token_sealed    bytea NOT NULL,
    refresh_token_key_id    text NOT NULL,
    -- Bumped on every persisted rotation: the fence of the conditional UPDATE.
    token_version           bigint NOT NULL DEFAULT 0,
    access_token_sealed     bytea,
    access_token_key_id     text,
    access_expires_at       timestamptz,

    refresh_rotated_at      timestamptz NOT NULL,
    refresh_idle_deadline   timestamptz NOT NULL,
    family_started_at       timestamptz NOT NULL,
    family_deadline         timestamptz NOT NULL,
    -- Set when a token exchange starts, cleared when its result is persisted: a non-NULL
    -- value on an unleased row means an exchange was interrupted.
    refresh_started_at      timestamptz,
    next_refresh_at         timestamptz NOT NULL,
    last_refreshed_at       timestamptz,
    failure_streak          integer NOT NULL DEFAULT 0,
    last_error              text,

    leased_by               text,
    leased_until            timestamptz,
    lease_epoch             bigint NOT NULL DEFAULT 0,

    created_at              timestamptz NOT NULL,
    updated_at              timestamptz NOT NULL
);

CREATE INDEX grants_due ON grants (next_refresh_at) WHERE status IN ('active', 'degraded');

-- Sites a grant reaches, keyed by (cloud id, product): accessible-resources lists the same
-- cloud id once per product.
CREATE TABLE sites (
    grant_id        uuid NOT NULL REFERENCES grants (id) ON DELETE CASCADE,
    cloud_id        text NOT NULL,
    product         text NOT NULL CHECK (product IN ('jira', 'confluence')),
    name            text NOT NULL,
    url             text NOT NULL,
    scopes          text[] NOT NULL DEFAULT '{}',
    missing_scopes  text[] NOT NULL DEFAULT '{}',
    status          text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'revoked')),
    -- A gateway "scope does not match" seen while calling this site.
    scope_error     text,
    first_seen_at   timestamptz NOT NULL,
    last_seen_at    timestamptz NOT NULL,
    revoked_at      timestamptz,
    PRIMARY KEY (grant_id, cloud_id, product)
);

CREATE INDEX sites_by_cloud ON sites (cloud_id, product);

-- Consent attempts in flight: the state value travels in a cookie and the redirect; only
-- its digest is kept here, and each is consumed once.
CREATE TABLE oauth_states (
    state_digest    bytea PRIMARY KEY,
    label           text NOT NULL,
    created_at      timestamptz NOT NULL,
    expires_at      timestamptz NOT NULL,
    consumed_at     timestamptz
);

-- The alerts outbox: written in the same transaction as the change that raised it.
CREATE TABLE alerts (
    id                  bigserial PRIMARY KEY,
    kind                text NOT NULL CHECK (kind IN
                        ('needs_reauth', 'family_expiring', 'site_revoked', 'scopes_missing', 'degraded')),
    -- One open alert per condition: e.g. 'needs_reauth:<grant>' or 'site_revoked:<grant>:<cloud>:<product>'.
    dedupe_key          text NOT NULL,
    grant_id            uuid NOT NULL REFERENCES grants (id) ON DELETE CASCADE,
    account_id          text,
    label               text NOT NULL,
    cloud_id            text,
    product             text,
    reason              text NOT NULL,
    since               timestamptz NOT NULL,
    deadline            timestamptz,
    reconsent_url       text NOT NULL,
    opened_at           timestamptz NOT NULL,
    resolved_at         timestamptz,
    delivered_at        timestamptz,
    delivery_attempts   integer NOT NULL DEFAULT 0,
    next_delivery_at    timestamptz,
    last_delivery_error text
);

CREATE UNIQUE INDEX alerts_one_open_per_condition ON alerts (dedupe_key) WHERE resolved_at IS NULL;
CREATE INDEX alerts_undelivered ON alerts (next_delivery_at) WHERE delivered_at IS NULL;
