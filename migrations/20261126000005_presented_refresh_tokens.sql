-- Digests (SHA-256) of every refresh token atlassync has presented to Atlassian. A token
-- presented once is superseded by its rotation; presenting it again after the 10-minute
-- reuse leeway revokes the whole family, so an import of a token already seen is refused.
-- Rows older than the absolute family lifetime describe dead tokens and may be pruned.
CREATE TABLE presented_refresh_tokens (
    digest bytea PRIMARY KEY,
    grant_id uuid REFERENCES grants (id) ON DELETE SET NULL,
    presented_at timestamptz NOT NULL
);

CREATE INDEX presented_refresh_tokens_presented_at ON presented_refresh_tokens (presented_at);
