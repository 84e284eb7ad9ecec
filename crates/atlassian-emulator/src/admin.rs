//! Data operations behind both the [`EmulatorHandle`](super::EmulatorHandle) and the control
//! API: they check the site (and accounts) in the OAuth state first, then change the product
//! data, so the two locks are never held together.

use chrono::{DateTime, Utc};

use super::Product;
use super::issues::{IssueChange, IssueSnapshot};
use super::jsm_alerts::JsmAlertSnapshot;
use super::products::DataError;
use super::server::Shared;
use super::spaces::{SpaceChange, SpaceSnapshot};

/// `Ok` when `cloud_id` exists and runs `product`.
pub(crate) fn check_site(
    shared: &Shared,
    cloud_id: &str,
    product: Product,
) -> Result<(), DataError> {
    shared.with_state(|state| match state.site_products(cloud_id) {
        None => Err(DataError::UnknownSite(cloud_id.to_owned())),
        Some(products) if !products.contains(&product) => Err(DataError::ProductNotRunning {
            cloud_id: cloud_id.to_owned(),
            product,
        }),
        Some(_) => Ok(()),
    })
}

/// Generates `count` issues in `project_key`, assigned among the site's users.
pub(crate) fn create_issues(
    shared: &Shared,
    cloud_id: &str,
    project_key: &str,
    count: usize,
    updated_at: Option<DateTime<Utc>>,
) -> Result<Vec<String>, DataError> {
    check_site(shared, cloud_id, Product::Jira)?;
    let people = shared.with_state(|state| state.people_of_site(cloud_id));
    let now = shared.now();
    shared.with_products(|products| {
        products.generate_issues(cloud_id, project_key, count, people, now, updated_at)
    })
}

/// Moves an issue to another project (new key, same id, `updated` = now).
pub(crate) fn move_issue(
    shared: &Shared,
    cloud_id: &str,
    issue: &str,
    project_key: &str,
) -> Result<IssueSnapshot, DataError> {
    check_site(shared, cloud_id, Product::Jira)?;
    let now = shared.now();
    shared.with_products(|products| {
        products
            .jira(cloud_id)
            .move_issue(issue, project_key, now)
            .map(IssueSnapshot::from)
    })
}

/// Hides project `project_key` from `account_id` or shows it again.
pub(crate) fn set_project_visibility(
    shared: &Shared,
    cloud_id: &str,
    project_key: &str,
    account_id: &str,
    visible: bool,
) -> Result<(), DataError> {
    check_site(shared, cloud_id, Product::Jira)?;
    if !shared.with_state(|state| state.has_user(account_id)) {
        return Err(DataError::UnknownAccount(account_id.to_owned()));
    }
    shared.with_products(|products| {
        products
            .jira(cloud_id)
            .set_visibility(project_key, account_id, visible)
    })
}

/// Creates or changes one issue.
pub(crate) fn upsert_issue(
    shared: &Shared,
    cloud_id: &str,
    change: &IssueChange,
) -> Result<IssueSnapshot, DataError> {
    check_site(shared, cloud_id, Product::Jira)?;
    let named = [&change.assignee, &change.reporter]
        .into_iter()
        .filter_map(|who| who.clone().flatten());
    let mut people = Vec::new();
    for account_id in named {
        let person = shared
            .with_state(|state| state.person(&account_id))
            .ok_or(DataError::UnknownAccount(account_id))?;
        people.push(person);
    }
    shared.with_products(|products| products.upsert_issue(cloud_id, change, people))
}

/// Deletes issues by id or key; returns how many existed.
pub(crate) fn delete_issues<S: AsRef<str>>(
    shared: &Shared,
    cloud_id: &str,
    ids: &[S],
) -> Result<usize, DataError> {
    check_site(shared, cloud_id, Product::Jira)?;
    Ok(shared.with_products(|products| {
        let site = products.jira(cloud_id);
        ids.iter().filter(|id| site.delete(id.as_ref())).count()
    }))
}

/// Every live issue, ascending by id.
pub(crate) fn issues(shared: &Shared, cloud_id: &str) -> Result<Vec<IssueSnapshot>, DataError> {
    check_site(shared, cloud_id, Product::Jira)?;
    Ok(shared.with_products(|products| products.jira(cloud_id).snapshots()))
}

/// Ids of deleted issues, ascending.
pub(crate) fn deleted_issue_ids(shared: &Shared, cloud_id: &str) -> Result<Vec<String>, DataError> {
    check_site(shared, cloud_id, Product::Jira)?;
    Ok(shared.with_products(|products| products.jira(cloud_id).deleted_ids()))
}

/// Generates `count` spaces.
pub(crate) fn create_spaces(
    shared: &Shared,
    cloud_id: &str,
    count: usize,
) -> Result<Vec<String>, DataError> {
    check_site(shared, cloud_id, Product::Confluence)?;
    let people = shared.with_state(|state| state.people_of_site(cloud_id));
    let now = shared.now();
    shared.with_products(|products| products.generate_spaces(cloud_id, count, people, now))
}

/// Creates or changes one space.
pub(crate) fn upsert_space(
    shared: &Shared,
    cloud_id: &str,
    change: &SpaceChange,
) -> Result<SpaceSnapshot, DataError> {
    check_site(shared, cloud_id, Product::Confluence)?;
    let now = shared.now();
    shared.with_products(|products| products.upsert_space(cloud_id, change, now))
}

/// Deletes spaces by id or key; returns how many existed.
pub(crate) fn delete_spaces<S: AsRef<str>>(
    shared: &Shared,
    cloud_id: &str,
    ids: &[S],
) -> Result<usize, DataError> {
    check_site(shared, cloud_id, Product::Confluence)?;
    Ok(shared.with_products(|products| {
        let site = products.confluence(cloud_id);
        ids.iter().filter(|id| site.delete(id.as_ref())).count()
    }))
}

/// Every live space, ascending by id.
pub(crate) fn spaces(shared: &Shared, cloud_id: &str) -> Result<Vec<SpaceSnapshot>, DataError> {
    check_site(shared, cloud_id, Product::Confluence)?;
    Ok(shared.with_products(|products| products.confluence(cloud_id).snapshots()))
}

/// Every JSM Operations alert of the site, oldest first.
pub(crate) fn jsm_alerts(
    shared: &Shared,
    cloud_id: &str,
) -> Result<Vec<JsmAlertSnapshot>, DataError> {
    check_site(shared, cloud_id, Product::Jira)?;
    Ok(shared.with_products(|products| products.jsm(cloud_id).snapshots()))
}
