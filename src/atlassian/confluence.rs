//! Confluence Cloud REST v2 calls a sync makes: the spaces listing with cursor paging.

use serde::Deserialize;
use serde_json::Value;

use super::ProductCall;
use crate::domain::{Product, SpaceRow};

/// One page of `GET /wiki/api/v2/spaces`.
#[derive(Debug, Deserialize)]
pub struct SpacesPage {
    /// The page's spaces, kept as JSON until [`space_row`] reads their columns.
    #[serde(default)]
    pub results: Vec<Value>,
    /// `_links`: its `next` is absent on the last page.
    #[serde(rename = "_links", default)]
    pub links: Links,
}

/// `_links` of a v2 listing.
#[derive(Debug, Default, Deserialize)]
pub struct Links {
    /// The next page as a site-relative URL carrying `cursor`; absent on the last page.
    pub next: Option<String>,
}

impl SpacesPage {
    /// The cursor of the next page. The `next` link is relative to the site, which does not
    /// accept 3LO tokens, so only its cursor is taken and re-sent through the gateway.
    pub fn next_cursor(&self) -> Option<String> {
        let next = self.links.next.as_deref()?;
        let url = url::Url::parse("https://site.invalid")
            .ok()?
            .join(next)
            .ok()?;
        url.query_pairs()
            .find(|(k, _)| k == "cursor")
            .map(|(_, v)| v.into_owned())
            .filter(|c| !c.is_empty())
    }
}

/// One page of spaces (250 per page, the maximum).
pub fn spaces(cursor: Option<&str>) -> ProductCall<SpacesPage> {
    let mut query = vec![("limit", "250".to_owned())];
    if let Some(cursor) = cursor {
        query.push(("cursor", cursor.to_owned()));
    }
    ProductCall::get(
        Product::Confluence,
        "wiki/api/v2/spaces",
        query,
        250,
        |page: &SpacesPage| page.results.len(),
    )
}

/// The typed columns of one space; `None` without an id or key. Every field is optional in
/// practice (description and icon are often null), so nothing else is required.
pub fn space_row(raw: Value) -> Option<SpaceRow> {
    let id = match raw.get("id")? {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => return None,
    };
    let text = |k: &str| raw.get(k).and_then(Value::as_str).map(str::to_owned);
    Some(SpaceRow {
        space_id: id,
        space_key: text("key")?,
        name: text("name"),
        space_type: text("type"),
        status: text("status"),
        raw,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cursor_is_taken_from_a_relative_next_link() {
        let page: SpacesPage = serde_json::from_str(
            r#"{"results":[],"_links":{"next":"/wiki/api/v2/spaces?cursor=eyJpZCI6Ijk4MzA1In0&limit=1","base":"https://acme.atlassian.net/wiki"}}"#,
        )
        .unwrap();
        assert_eq!(page.next_cursor().as_deref(), Some("eyJpZCI6Ijk4MzA1In0"));
        let last: SpacesPage =
            serde_json::from_str(r#"{"results":[],"_links":{"base":"x"}}"#).unwrap();
        assert_eq!(last.next_cursor(), None);
    }
}
