//! `sites list` and `sites pin`.

use anyhow::{Context, bail};
use sqlx::PgPool;

use crate::domain::{CloudId, Product};
use crate::store::{grants, synced_sites};

type Timestamp = Option<chrono::DateTime<chrono::Utc>>;

/// Prints every synced site.
pub async fn list(pool: &PgPool) -> anyhow::Result<()> {
    let rows = {
        let mut conn = pool.acquire().await?;
        synced_sites::overview(&mut conn).await?
    };
    let time = |t: Timestamp| {
        t.map(|t| t.format("%Y-%m-%d %H:%M").to_string())
            .unwrap_or_else(|| "-".into())
    };
    println!(
        "{:<16} {:<11} {:<38} {:<16} {:<16} {:<17} LAST SYNC",
        "SITE", "PRODUCT", "CLOUD ID", "ELECTED", "PINNED", "WATERMARK"
    );
    for row in rows {
        println!(
            "{:<16} {:<11} {:<38} {:<16} {:<16} {:<17} {}",
            row.name,
            row.product,
            row.cloud_id,
            row.elected.as_deref().unwrap_or("(none healthy)"),
            row.pinned.as_deref().unwrap_or("-"),
            time(row.watermark),
            time(row.synced)
        );
    }
    Ok(())
}

/// Pins the grant labelled `label` for a site, or clears the pin.
pub async fn pin(
    pool: &PgPool,
    cloud_id: &str,
    product: &str,
    label: Option<&str>,
) -> anyhow::Result<()> {
    let Some(product) = Product::parse(product) else {
        bail!("--product must be jira or confluence, not `{product}`");
    };
    let cloud_id = &CloudId::new(cloud_id);
    let grant_id = match label {
        Some(label) => {
            let ids = {
                let mut conn = pool.acquire().await?;
                grants::ids_labelled(&mut conn, label).await?
            };
            match ids.as_slice() {
                [id] => Some(*id),
                [] => bail!("no grant is labelled `{label}`"),
                _ => bail!(
                    "several grants are labelled `{label}`; relabel one by consenting again with another label"
                ),
            }
        }
        None => None,
    };
    let mut conn = pool.acquire().await?;
    let pinned = synced_sites::pin_grant(&mut conn, cloud_id, product, grant_id)
        .await
        .context("pinning")?;
    if !pinned {
        bail!(
            "no synced site {cloud_id} ({product}); `atlassync sites list` shows them after the first sync pass"
        );
    }
    eprintln!(
        "{}",
        if grant_id.is_some() {
            "pinned"
        } else {
            "pin cleared"
        }
    );
    Ok(())
}
