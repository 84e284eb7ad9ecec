//! Token material. Tokens look like the real ones (JWTs: three base64url segments starting
//! `eyJ`) but carry nothing the emulator relies on: it keeps only their SHA-256 digests and
//! looks them up by digest, so a leaked state dump holds no usable token.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use rand::Rng as _;
use sha2::{Digest as _, Sha256};

/// SHA-256 of a token string; the only form in which the emulator stores a token.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub(crate) struct TokenHash([u8; 32]);

impl TokenHash {
    /// Digest of a presented token.
    pub(crate) fn of(token: &str) -> Self {
        Self(Sha256::digest(token.as_bytes()).into())
    }
}

/// What a minted token is for; only changes the cosmetic header.
#[derive(Clone, Copy, Debug)]
pub(crate) enum TokenKind {
    Access,
    Refresh,
    Code,
}

/// Mints a fresh random token and its digest. `expires_at` goes into the cosmetic payload.
pub(crate) fn mint(
    kind: TokenKind,
    issued_at: DateTime<Utc>,
    expires_at: Option<DateTime<Utc>>,
) -> (String, TokenHash) {
    let mut rng = rand::rng();
    let mut key_id = [0u8; 12];
    rng.fill_bytes(&mut key_id);
    let key_id = hex(&key_id);
    let header = match kind {
        TokenKind::Access => {
            serde_json::json!({"kid": format!("auth.atlassian.com-ACCESS-{key_id}"), "alg": "RS256"})
        }
        TokenKind::Refresh => serde_json::json!({"kid": key_id, "alg": "RS256"}),
        TokenKind::Code => serde_json::json!({"alg": "HS256"}),
    };
    let mut payload = serde_json::json!({
        "jti": uuid::Uuid::new_v4().to_string(),
        "iat": issued_at.timestamp(),
        "iss": "https://auth.atlassian.com",
    });
    if let (Some(exp), Some(object)) = (expires_at, payload.as_object_mut()) {
        object.insert("exp".to_owned(), exp.timestamp().into());
    }
    let mut signature = [0u8; 64];
    rng.fill_bytes(&mut signature);
    let token = format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(payload.to_string()),
        URL_SAFE_NO_PAD.encode(signature)
    );
    let hash = TokenHash::of(&token);
    (token, hash)
}

/// A random opaque identifier (pending consent requests).
pub(crate) fn random_id() -> String {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    hex(&bytes)
}

/// PKCE S256: base64url(SHA-256(verifier)) == challenge.
pub(crate) fn pkce_s256_matches(verifier: &str, challenge: &str) -> bool {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes())) == challenge
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_tokens_look_like_jwts_and_are_unique() {
        let now = DateTime::<Utc>::UNIX_EPOCH;
        let (a, hash_a) = mint(TokenKind::Access, now, Some(now));
        let (b, hash_b) = mint(TokenKind::Refresh, now, None);
        for token in [&a, &b] {
            assert!(token.starts_with("eyJ"), "{token}");
            assert_eq!(token.split('.').count(), 3);
        }
        assert_ne!(a, b);
        assert_ne!(hash_a, hash_b);
        assert_eq!(TokenHash::of(&a), hash_a);
    }

    #[test]
    fn pkce_matches_a_challenge_computed_by_openssl() {
        let challenge = "xjQfGxGBmKFum-5sx-Mi8CDB-HmfYYBFxQNoyu7YuoU";
        assert!(pkce_s256_matches(
            "dBjftJeZ4CVP-mJ92K9qEJ5yWIMsW0Lpt9uDf6x5v3k",
            challenge
        ));
        assert!(!pkce_s256_matches("other", challenge));
    }
}
