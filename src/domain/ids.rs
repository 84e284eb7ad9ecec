//! Identifiers, parsed once where they enter and carried as their own types afterwards, so a
//! cloud id cannot be passed where an account id is expected.

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// atlassync's id of one grant (one user's consent), the `grants.id` column.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, sqlx::Type,
)]
#[serde(transparent)]
#[sqlx(transparent)]
pub struct GrantId(Uuid);

impl GrantId {
    /// A fresh random id for a new grant.
    pub fn new_random() -> Self {
        Self(Uuid::new_v4())
    }

    /// The id as a UUID.
    pub fn as_uuid(self) -> Uuid {
        self.0
    }
}

impl From<Uuid> for GrantId {
    fn from(id: Uuid) -> Self {
        Self(id)
    }
}

impl fmt::Display for GrantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

macro_rules! text_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(
            Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, sqlx::Type,
        )]
        #[serde(transparent)]
        #[sqlx(transparent)]
        pub struct $name(String);

        impl $name {
            /// Wraps an id as Atlassian sent it.
            pub fn new(id: impl Into<String>) -> Self {
                Self(id.into())
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<&str> for $name {
            fn from(id: &str) -> Self {
                Self(id.to_owned())
            }
        }

        impl From<String> for $name {
            fn from(id: String) -> Self {
                Self(id)
            }
        }
    };
}

text_id!(
    /// A site's cloud id (`accessible-resources` `id`). Not unique across products: the same
    /// id names a site's Jira and its Confluence (see [`super::SiteKey`]).
    CloudId
);

text_id!(
    /// An Atlassian account id (`/me` `account_id`): who consented.
    AccountId
);
