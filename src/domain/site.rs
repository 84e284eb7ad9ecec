//! Sites as atlassync keys them: a cloud id and a product, because Atlassian lists one site
//! once per product under the same id.

use std::fmt;

use std::str::FromStr;

use serde::Serialize;

use super::CloudId;

/// The product a site entry is for. Atlassian lists a site once per product with the same
/// id, and only the scopes tell which product an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Product {
    /// Jira: entries whose scopes mention `jira`.
    Jira,
    /// Confluence: entries whose scopes mention `confluence` (and none `jira`).
    Confluence,
}

impl Product {
    /// Every product, in a fixed order (for figures reported per product).
    pub const ALL: [Product; 2] = [Self::Jira, Self::Confluence];

    /// The name stored in the `sites.product` column.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Jira => "jira",
            Self::Confluence => "confluence",
        }
    }

    /// Parses the stored name.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "jira" => Some(Self::Jira),
            "confluence" => Some(Self::Confluence),
            _ => None,
        }
    }

    /// Infers the product from a container's scopes (`read:jira-work`,
    /// `read:space:confluence`, ...). `None` when the scopes name neither.
    pub fn infer(scopes: &[String]) -> Option<Self> {
        if scopes.iter().any(|s| s.contains("jira")) {
            Some(Self::Jira)
        } else if scopes.iter().any(|s| s.contains("confluence")) {
            Some(Self::Confluence)
        } else {
            None
        }
    }

    /// The scopes atlassync needs on a site of this product to sync it, taken from what it
    /// requests. Jira Service Management scopes (e.g. the ops-alert scopes the JSM alert
    /// sink uses) name `jira` too but no sync needs them: a grant without them still syncs.
    pub fn required_scopes(self, requested: &[String]) -> Vec<String> {
        let marker = self.as_str();
        requested
            .iter()
            .filter(|s| s.contains(marker) && !s.ends_with(":jira-service-management"))
            .cloned()
            .collect()
    }
}

/// A site as atlassync keys it: (cloud id, product).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Site {
    /// The site's cloud id, shared by its products.
    pub cloud_id: CloudId,
    /// Which product this entry is, inferred from its scopes.
    pub product: Product,
    /// The site's name.
    pub name: String,
    /// The site's base URL.
    pub url: String,
    /// The scopes the grant holds on this site for this product.
    pub scopes: Vec<String>,
}

/// One product of one site: how sites are keyed everywhere (tables, elections, throttles).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SiteKey {
    /// The site.
    pub cloud_id: CloudId,
    /// Which of its products.
    pub product: Product,
}

impl fmt::Display for SiteKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.cloud_id, self.product.as_str())
    }
}

/// A product name this build does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown product `{0}` (expected jira or confluence)")]
pub struct UnknownProduct(pub String);

impl FromStr for Product {
    type Err = UnknownProduct;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Self::parse(name).ok_or_else(|| UnknownProduct(name.to_owned()))
    }
}

impl fmt::Display for Product {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl AsRef<str> for Product {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sync_needs_no_jira_service_management_scope() {
        let requested: Vec<String> = [
            "read:me",
            "read:jira-work",
            "read:jira-user",
            "read:space:confluence",
            "read:ops-alert:jira-service-management",
            "write:ops-alert:jira-service-management",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            Product::Jira.required_scopes(&requested),
            ["read:jira-work", "read:jira-user"]
        );
        assert_eq!(
            Product::Confluence.required_scopes(&requested),
            ["read:space:confluence"]
        );
    }
}
