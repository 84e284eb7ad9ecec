//! The words atlassync speaks in: identifiers, products and sites, grant states, job kinds,
//! token secrets and the mirrored rows. Values are parsed once at the edge and carried as these
//! types; this room depends on no other.

mod grant_status;
mod id_range;
mod ids;
mod job;
mod records;
mod secrets;
mod sink;
mod site;
mod sql;

pub use grant_status::{GrantStatus, UnknownGrantStatus};
pub use id_range::IdRange;
pub use ids::{AccountId, CloudId, GrantId};
pub use job::{JobKind, SyncKind};
pub use records::{IssueRow, SpaceRow};
pub use secrets::{AccessToken, AuthorizationCode, RefreshToken};
pub use sink::{Sink, UnknownSink};
pub use site::{Product, Site, SiteKey, UnknownProduct};
