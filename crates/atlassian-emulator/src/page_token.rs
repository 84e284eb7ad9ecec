//! Opaque page tokens and cursors: a JSON position sealed with an HMAC under a key that is random
//! per emulator instance, then base64url-encoded. Clients cannot forge or edit them, and tokens
//! from another emulator run are refused. What a position means (and when it expires) is up to
//! the endpoint that issues it.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit as _, Mac as _};
use rand::Rng as _;
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest as _, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// Bytes of MAC appended to the payload.
const MAC_LEN: usize = 16;

/// The per-instance sealing key. No `Debug`: it is a secret.
pub(crate) struct PageKey([u8; 32]);

impl PageKey {
    /// A fresh random key.
    pub(crate) fn random() -> Self {
        let mut key = [0u8; 32];
        rand::rng().fill_bytes(&mut key);
        Self(key)
    }

    /// HMAC takes keys of any length, so this is always `Some`; no panic path either way.
    fn mac(&self, payload: &[u8]) -> Option<[u8; MAC_LEN]> {
        let mut mac = HmacSha256::new_from_slice(&self.0).ok()?;
        mac.update(payload);
        let full = mac.finalize().into_bytes();
        let mut out = [0u8; MAC_LEN];
        out.copy_from_slice(full.get(..MAC_LEN)?);
        Some(out)
    }

    /// Seals `value` into an opaque token.
    pub(crate) fn seal<T: Serialize>(&self, value: &T) -> String {
        let mut bytes = serde_json::to_vec(value).unwrap_or_default();
        let Some(mac) = self.mac(&bytes) else {
            return String::new();
        };
        bytes.extend_from_slice(&mac);
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// Opens a token sealed by [`PageKey::seal`]; `None` when malformed, forged or foreign.
    pub(crate) fn open<T: DeserializeOwned>(&self, token: &str) -> Option<T> {
        let bytes = URL_SAFE_NO_PAD.decode(token.trim()).ok()?;
        let split = bytes.len().checked_sub(MAC_LEN)?;
        let (payload, mac) = bytes.split_at(split);
        let mut verifier = HmacSha256::new_from_slice(&self.0).ok()?;
        verifier.update(payload);
        verifier.verify_truncated_left(mac).ok()?;
        serde_json::from_slice(payload).ok()
    }
}

/// A short stable fingerprint of a query text (binds a token to the query that issued it).
pub(crate) fn fingerprint(text: &str) -> String {
    Sha256::digest(text.as_bytes())[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_resist_tampering() {
        let key = PageKey::random();
        let token = key.seal(&(42u64, "after".to_owned()));
        assert_eq!(
            key.open::<(u64, String)>(&token),
            Some((42, "after".into()))
        );
        let mut forged = token.clone().into_bytes();
        forged[3] = if forged[3] == b'A' { b'B' } else { b'A' };
        let forged = String::from_utf8(forged).expect("ascii");
        assert_eq!(key.open::<(u64, String)>(&forged), None);
        assert_eq!(PageKey::random().open::<(u64, String)>(&token), None);
        assert_eq!(key.open::<(u64, String)>("not a token"), None);
        assert_eq!(key.open::<(u64, String)>(""), None);
    }
}
