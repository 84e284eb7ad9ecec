//! Turning fresh tokens into a stored grant: after a consent (the callback) or when a team
//! brings refresh tokens from an existing integration (`grants import`).

use chrono::{DateTime, Utc};

use crate::app::App;
use crate::atlassian::ApiError;
use crate::domain::Site;
use crate::domain::{AccountId, GrantId, RefreshToken};
use crate::oauth::{TokenError, TokenSet};
use crate::store::alerts::{self, AlertKind};
use crate::store::grants::{self, Account, FamilyRecord};
use crate::store::sites::{self, StoredSite};
use crate::store::{is_unique_violation, presented_tokens};

/// Why a grant could not be stored.
#[derive(Debug, thiserror::Error)]
pub enum OnboardError {
    /// The token endpoint refused the code or the refresh token.
    #[error("token exchange failed: {0}")]
    Token(#[from] TokenError),
    /// The answer had no refresh token: `offline_access` was not granted.
    #[error("Atlassian issued no refresh token: the app must request offline_access")]
    NoRefreshToken,
    /// `/me` failed, so the account is unknown.
    #[error("reading the user's profile (/me) failed: {0}")]
    Profile(#[source] ApiError),
    /// accessible-resources failed.
    #[error("reading accessible-resources failed: {0}")]
    Sites(#[source] ApiError),
    /// The database failed.
    #[error("database error: {0}")]
    Store(#[from] sqlx::Error),
    /// A re-consent link was used by another Atlassian account than the grant's.
    #[error(
        "this re-consent link is for Atlassian account {expected}, but account {actual} consented; nothing was stored. The user the link was sent to must open it"
    )]
    WrongAccount {
        /// The grant's account, named in the link.
        expected: AccountId,
        /// The account that consented.
        actual: AccountId,
    },
    /// The token was presented before (imported, or rotated by atlassync): presenting it
    /// again outside Atlassian's reuse leeway would revoke its whole family.
    #[error(
        "this refresh token was already presented to Atlassian (imported before, or rotated since); it is skipped, because presenting it again would revoke its token family"
    )]
    AlreadyPresented,
    /// An imported token was exchanged and its successor saved, but identifying the account failed.
    #[error(
        "the rotated refresh token is saved as grant {grant_id}, but identifying it failed: {cause}; the daemon identifies it at its next revalidation"
    )]
    Unidentified {
        /// The grant row holding the rotated token, with no account.
        grant_id: GrantId,
        /// Why identification failed: [`OnboardError::Profile`] or [`OnboardError::Sites`].
        cause: Box<OnboardError>,
    },
}

/// A grant as it stands after onboarding.
#[derive(Debug, Clone)]
pub struct Connected {
    /// The grant now holding the family: an existing one when `renewed`.
    pub grant_id: GrantId,
    /// True when an existing grant of the same account was renewed.
    pub renewed: bool,
    /// Who consented, from `/me`.
    pub account: Account,
    /// The grant's active sites after this consent.
    pub sites: Vec<StoredSite>,
}

/// Stores the tokens of a completed consent for the invite labelled `label`. A consent by an
/// account that already has a grant renews that grant: new family, status back to active.
///
/// A re-consent link names the account it is for (`expected_account`): a consent by any
/// other account is refused and nothing is stored.
pub async fn connect_consented(
    app: &App,
    label: &str,
    tokens: TokenSet,
    expected_account: Option<&AccountId>,
) -> Result<Connected, OnboardError> {
    let refresh_token = tokens
        .refresh_token
        .clone()
        .ok_or(OnboardError::NoRefreshToken)?;
    let (account, sites) = identify(app, &tokens).await?;
    if let Some(expected) = expected_account
        && *expected != account.account_id
    {
        return Err(OnboardError::WrongAccount {
            expected: expected.clone(),
            actual: account.account_id,
        });
    }
    let now = app.clock.now();
    // Two callbacks of one account may race to insert; the loser renews the winner's row.
    let mut attempt = 0;
    loop {
        attempt += 1;
        match store_family(
            app,
            label,
            &account,
            &tokens,
            &refresh_token,
            &sites,
            now,
            now,
            None,
        )
        .await
        {
            Err(OnboardError::Store(e)) if attempt == 1 && is_unique_violation(&e) => continue,
            other => return other,
        }
    }
}

/// Imports one refresh token from an existing integration: it is exchanged once, and the
/// rotated token is persisted before anything else can fail. `consented_at`, when known,
/// dates the token family (Atlassian's 365-day deadline counts from it); otherwise the
/// import time is assumed.
pub async fn import_refresh_token(
    app: &App,
    label: &str,
    presented: &RefreshToken,
    consented_at: Option<DateTime<Utc>>,
) -> Result<Connected, OnboardError> {
    let now = app.clock.now();
    {
        let mut conn = app.pool.acquire().await?;
        // An import that died after its exchange may be re-run inside the reuse leeway.
        let retry_window = app.config.tokens.reuse_leeway / 2;
        if !presented_tokens::record_presented(&mut conn, presented, None, now, retry_window)
            .await?
        {
            return Err(OnboardError::AlreadyPresented);
        }
    }
    let tokens = match app.tokens.refresh(presented).await {
        Ok(tokens) => tokens,
        Err(e) => {
            // An answer that certainly rotated nothing leaves the token presentable.
            if !matches!(
                e,
                TokenError::InvalidGrant { .. } | TokenError::Interrupted(_)
            ) {
                let mut conn = app.pool.acquire().await?;
                presented_tokens::forget_presented(&mut conn, presented).await?;
            }
            return Err(e.into());
        }
    };
    // A response without a refresh token means the presented one stays current.
    let refresh_token = tokens
        .refresh_token
        .clone()
        .unwrap_or_else(|| presented.clone());
    let now = app.clock.now();
    let family_started_at = consented_at.unwrap_or(now).min(now);

    let placeholder = GrantId::new_random();
    let family = family_record(
        app,
        placeholder,
        &tokens,
        &refresh_token,
        family_started_at,
        now,
    );
    // The rotated token exists only here now: its first write is retried until the
    // database takes it.
    crate::store::until_reachable("storing an imported grant's rotated token", || async {
        let mut conn = app.pool.acquire().await?;
        grants::insert_grant(&mut conn, label, None, &family, now).await
    })
    .await?;
    {
        let mut conn = app.pool.acquire().await?;
        presented_tokens::link(&mut conn, presented, placeholder).await?;
    }

    let (account, sites) = match identify(app, &tokens).await {
        Ok(identified) => identified,
        Err(cause) => {
            return Err(OnboardError::Unidentified {
                grant_id: placeholder,
                cause: Box::new(cause),
            });
        }
    };
    let connected = store_family(
        app,
        label,
        &account,
        &tokens,
        &refresh_token,
        &sites,
        family_started_at,
        now,
        Some(placeholder),
    )
    .await?;
    // The family may have moved into the account's existing grant.
    let mut conn = app.pool.acquire().await?;
    presented_tokens::link(&mut conn, presented, connected.grant_id).await?;
    Ok(connected)
}

async fn identify(app: &App, tokens: &TokenSet) -> Result<(Account, Vec<Site>), OnboardError> {
    let profile = app
        .api
        .me(&tokens.access_token)
        .await
        .map_err(OnboardError::Profile)?;
    let sites = app
        .api
        .accessible_sites(&tokens.access_token)
        .await
        .map_err(OnboardError::Sites)?;
    Ok((
        Account {
            account_id: profile.account_id,
            name: profile.name,
            email: profile.email,
        },
        sites,
    ))
}

/// Writes the family, the account's sites and the cleared alerts in one transaction.
/// `placeholder` is an imported grant row not yet tied to an account.
#[allow(clippy::too_many_arguments)]
async fn store_family(
    app: &App,
    label: &str,
    account: &Account,
    tokens: &TokenSet,
    refresh_token: &RefreshToken,
    sites: &[Site],
    family_started_at: DateTime<Utc>,
    now: DateTime<Utc>,
    placeholder: Option<GrantId>,
) -> Result<Connected, OnboardError> {
    let mut tx = app.pool.begin().await?;
    let existing = grants::lock_grant_of_account(&mut tx, &account.account_id).await?;
    let (grant_id, renewed) = match (existing, placeholder) {
        (Some(existing), Some(placeholder)) if existing != placeholder => {
            // The account already has a grant: move the imported family into it.
            grants::delete_grant(&mut tx, placeholder).await?;
            let family =
                family_record(app, existing, tokens, refresh_token, family_started_at, now);
            grants::renew_grant(&mut tx, label, account, &family, now).await?;
            (existing, true)
        }
        (Some(existing), _) => {
            let family =
                family_record(app, existing, tokens, refresh_token, family_started_at, now);
            grants::renew_grant(&mut tx, label, account, &family, now).await?;
            (existing, true)
        }
        (None, Some(placeholder)) => {
            grants::set_account(&mut tx, placeholder, account, now).await?;
            (placeholder, false)
        }
        (None, None) => {
            let grant_id = GrantId::new_random();
            let family =
                family_record(app, grant_id, tokens, refresh_token, family_started_at, now);
            grants::insert_grant(&mut tx, label, Some(account), &family, now).await?;
            (grant_id, false)
        }
    };
    if renewed {
        // A new consent ends every grant-level condition; site conditions are re-evaluated
        // just below against the sites this consent reaches.
        alerts::resolve_grant_alerts(
            &mut tx,
            grant_id,
            &[
                AlertKind::NeedsReauth,
                AlertKind::FamilyExpiring,
                AlertKind::Degraded,
            ],
            now,
        )
        .await?;
    }
    let grant = grants::get_grant(&mut tx, grant_id)
        .await?
        .ok_or(sqlx::Error::RowNotFound)?;
    // Consent is a revalidation: the same rules (revoked sites, missing scopes, no site).
    crate::jobs::revalidate::apply_sites(&mut tx, app, &grant, sites).await?;
    grants::mark_revalidated(&mut tx, grant_id, now).await?;
    let stored_sites = sites::sites_of_grant(&mut tx, grant_id).await?;
    tx.commit().await?;
    tracing::info!(
        grant.id = %grant_id,
        grant.label = label,
        account.id = %account.account_id,
        sites = stored_sites.len(),
        renewed,
        "grant stored"
    );
    Ok(Connected {
        grant_id,
        renewed,
        account: account.clone(),
        sites: stored_sites
            .into_iter()
            .filter(|s| s.status == "active")
            .collect(),
    })
}

/// The sealed tokens and deadlines of a family whose latest rotation is `now`.
fn family_record(
    app: &App,
    grant_id: GrantId,
    tokens: &TokenSet,
    refresh_token: &RefreshToken,
    family_started_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> FamilyRecord {
    let policy = &app.config.tokens;
    let keyring = app.keyring();
    FamilyRecord {
        grant_id,
        refresh_token: grants::seal_refresh_token(keyring, grant_id, refresh_token),
        access_token: grants::seal_access_token(keyring, grant_id, &tokens.access_token),
        access_expires_at: now + tokens.expires_in,
        scopes: tokens.scopes.clone(),
        family_started_at,
        family_deadline: family_started_at + policy.absolute_expiry,
        rotated_at: now,
        refresh_idle_deadline: now + policy.inactivity_expiry,
        // Jittered like every keep-alive, so that a bulk import does not come due at once.
        next_refresh_at: crate::lifecycle::keepalive_due(policy, now),
    }
}
