-- Invite and re-consent links are single-use: the consent that completes through a link
-- spends it, remembered by the digest of the signed link until it would have expired.
CREATE TABLE spent_invites (
    digest      bytea PRIMARY KEY,
    label       text NOT NULL,
    spent_at    timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL
);

-- A consent attempt remembers the link it came from and, for a re-consent link, the only
-- account allowed to consent through it.
ALTER TABLE oauth_states ADD COLUMN invite_digest bytea;
ALTER TABLE oauth_states ADD COLUMN invite_expires_at timestamptz;
ALTER TABLE oauth_states ADD COLUMN account_id text;

-- Re-consent links are minted when a message is sent, never kept in rows that a reporting
-- database may copy.
ALTER TABLE alerts ALTER COLUMN reconsent_url DROP NOT NULL;
