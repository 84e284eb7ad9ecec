//! Signed, expiring consent links. An invite names the label the grant will carry; opening
//! it starts the OAuth flow. Links are signed with the crypto key and survive restarts.
//! Each link is single-use (the consent that completes through it spends it, recorded by
//! its digest), and a re-consent link also names the Atlassian account that must consent.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use url::Url;

use crate::crypto::{Keyring, digest, random_token};
use crate::domain::AccountId;

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
    /// Makes every minted link distinct, so that spending one spends no other.
    #[serde(default, rename = "n")]
    pub nonce: String,
    /// For a re-consent link: the only account that may consent through it.
    #[serde(default, rename = "a", skip_serializing_if = "Option::is_none")]
    pub account_id: Option<AccountId>,
}

impl Invite {
    /// A new invite for `label`, valid until `expires_at`, open to any account.
    pub fn new(label: impl Into<String>, expires_at: DateTime<Utc>) -> Self {
        Self {
            label: label.into(),
            expires_at,
            nonce: random_token()[..16].to_owned(),
            account_id: None,
        }
    }

    /// The same invite, usable only by `account_id` (a re-consent link for its grant).
    pub fn for_account(mut self, account_id: AccountId) -> Self {
        self.account_id = Some(account_id);
        self
    }

    /// What a spent link is remembered by: the digest of its signed form.
    pub fn spend_key(signed: &str) -> Vec<u8> {
        digest(signed.as_bytes())
    }

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
        let invite = Invite::new("mia", now + chrono::Duration::hours(1));
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
