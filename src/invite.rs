//! Signed, expiring consent links. An invite names the label the grant will carry; opening
//! it starts the OAuth flow. Links are signed with the crypto key, so they need no table
//! and survive restarts; they stay valid until they expire.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use url::Url;

use crate::crypto::Keyring;

/// The path invite links are served under.
pub const CONNECT_PATH: &str = "connect";

/// Why an invite link was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InviteError {
    /// The signature verifies under no configured key, or the payload is not an invite.
    #[error("this invite link is not valid (it was altered or cut short); ask for a new link")]
    Tampered,
    /// Signed correctly, but it expired at the given instant.
    #[error("this invite link expired at {0}; ask for a new link")]
    Expired(DateTime<Utc>),
}

/// What an invite carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invite {
    /// The label the grant made from this invite will carry.
    pub label: String,
    /// When the link stops working; whole seconds in the signed payload.
    #[serde(with = "chrono::serde::ts_seconds")]
    pub expires_at: DateTime<Utc>,
}

impl Invite {
    /// The link a user opens: `{public_url}/connect?invite=<signed>`.
    pub fn link(&self, keyring: &Keyring, public_url: &Url) -> Url {
        let payload = serde_json::to_vec(self).expect("an invite always serialises");
        let mut url = crate::transport::join(public_url, CONNECT_PATH);
        url.query_pairs_mut()
            .append_pair("invite", &keyring.sign(&payload));
        url
    }

    /// Checks a signed invite from a link.
    pub fn verify(
        keyring: &Keyring,
        signed: &str,
        now: DateTime<Utc>,
    ) -> Result<Self, InviteError> {
        let payload = keyring.verify(signed).ok_or(InviteError::Tampered)?;
        let invite: Invite = serde_json::from_slice(&payload).map_err(|_| InviteError::Tampered)?;
        if invite.expires_at <= now {
            return Err(InviteError::Expired(invite.expires_at));
        }
        Ok(invite)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invites_round_trip_and_expire() {
        let keyring = Keyring::from_keys(&[[5; 32]]);
        #[allow(clippy::disallowed_methods)] // any instant will do in this test
        let now = Utc::now();
        let invite = Invite {
            label: "mia".into(),
            expires_at: now + chrono::Duration::hours(1),
        };
        let link = invite.link(&keyring, &Url::parse("https://sync.example.com/").unwrap());
        let signed = link
            .query_pairs()
            .find(|(k, _)| k == "invite")
            .map(|(_, v)| v.into_owned())
            .unwrap();
        let back = Invite::verify(&keyring, &signed, now).unwrap();
        assert_eq!(back.label, "mia");
        assert!(matches!(
            Invite::verify(&keyring, &signed, now + chrono::Duration::hours(2)),
            Err(InviteError::Expired(_))
        ));
        assert_eq!(
            Invite::verify(&keyring, &format!("x{signed}"), now),
            Err(InviteError::Tampered)
        );
    }
}
