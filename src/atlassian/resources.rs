//! Who a grant belongs to (`/me`) and which sites it reaches (accessible-resources).

use serde::Deserialize;

use super::{ApiClient, ApiError};
use crate::domain::{AccessToken, AccountId, CloudId, Product, Site};

/// One entry of accessible-resources.
#[derive(Debug, Clone, Deserialize)]
pub struct AccessibleResource {
    /// The site's cloud id; the same for every product entry of one site.
    pub id: String,
    /// The site's name.
    pub name: String,
    /// The site's base URL, e.g. `https://acme.atlassian.net`.
    pub url: String,
    /// The scopes granted on this entry; the only hint of which product it is.
    #[serde(default)]
    pub scopes: Vec<String>,
}

/// The consenting user, from `/me`.
#[derive(Debug, Clone, Deserialize)]
pub struct Profile {
    /// Atlassian's account id, stable for the life of the account; grants are unique by it.
    pub account_id: AccountId,
    /// The display name, when the profile shares it.
    #[serde(default)]
    pub name: Option<String>,
    /// The email address, when the profile shares it.
    #[serde(default)]
    pub email: Option<String>,
}

impl ApiClient {
    /// `GET /oauth/token/accessible-resources`, keyed by (cloud id, product). Entries whose
    /// scopes name no product atlassync syncs are left out.
    pub async fn accessible_sites(&self, token: &AccessToken) -> Result<Vec<Site>, ApiError> {
        let resources: Vec<AccessibleResource> = self
            .get_json(token, "oauth/token/accessible-resources")
            .await?;
        Ok(sites_from_resources(resources))
    }

    /// `GET /me`.
    pub async fn me(&self, token: &AccessToken) -> Result<Profile, ApiError> {
        self.get_json(token, "me").await
    }
}

/// Turns accessible-resources entries into sites, merging duplicates of the same
/// (cloud id, product).
pub fn sites_from_resources(resources: Vec<AccessibleResource>) -> Vec<Site> {
    let mut sites: Vec<Site> = Vec::new();
    for resource in resources {
        let Some(product) = Product::infer(&resource.scopes) else {
            continue;
        };
        if let Some(existing) = sites
            .iter_mut()
            .find(|s| s.cloud_id.as_str() == resource.id && s.product == product)
        {
            for scope in resource.scopes {
                if !existing.scopes.contains(&scope) {
                    existing.scopes.push(scope);
                }
            }
            continue;
        }
        sites.push(Site {
            cloud_id: CloudId::new(resource.id),
            product,
            name: resource.name,
            url: resource.url,
            scopes: resource.scopes,
        });
    }
    sites.sort_by(|a, b| (&a.cloud_id, a.product).cmp(&(&b.cloud_id, b.product)));
    sites
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_cloud_id_for_two_products_becomes_two_sites() {
        let json = r#"[
          {"id":"1324a887-45db-1bf4-1e99-ef0ff456d421","name":"acme","url":"https://acme.atlassian.net","scopes":["read:jira-work","read:jira-user"],"avatarUrl":"x"},
          {"id":"1324a887-45db-1bf4-1e99-ef0ff456d421","name":"acme","url":"https://acme.atlassian.net","scopes":["read:space:confluence"],"avatarUrl":"x"}
        ]"#;
        let sites = sites_from_resources(serde_json::from_str(json).unwrap());
        assert_eq!(sites.len(), 2);
        assert_eq!(sites[0].product, Product::Jira);
        assert_eq!(sites[1].product, Product::Confluence);
        assert_eq!(sites[0].cloud_id, sites[1].cloud_id);
    }
}
