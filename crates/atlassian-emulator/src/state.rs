//! The emulator's world (sites, users, grants, token families, codes) and its rules.
//!
//! Every rule is a plain method over an explicit `now`, so unit tests drive it without HTTP or
//! a clock. Tokens are stored only as SHA-256 digests ([`TokenHash`]).
//!
//! Model (Atlassian's published rules for 3LO consent and refresh-token rotation):
//! - One grant per (client, account). The emulator knows exactly one client, so grants are
//!   keyed by account id. A grant is a set of sites plus a list of scopes.
//! - Each consent adds the chosen sites to the grant and *replaces* its scopes with the newly
//!   requested ones; exchanging the resulting code starts a new token family.
//! - Older families of the same grant keep working until they expire or are revoked: Atlassian
//!   documents no "re-consent kills earlier tokens" rule, so the emulator invents none. All
//!   families of a grant see the grant's *current* sites and scopes.
//! - A family is a linear chain of refresh tokens: generation `n` is current, `n-1` is the
//!   immediately previous one. See [`State::refresh`] for the rotation rules.

use std::collections::{HashMap, VecDeque};

use chrono::{DateTime, TimeDelta, Utc};

use super::products::Person;
use super::token::{self, TokenHash, TokenKind};
use super::{ConsentDecision, Counters, EmulatorConfig, NewUser, Product, RefreshErrorVariant};

/// The scope that makes the token endpoint hand out refresh tokens.
pub(crate) const OFFLINE_ACCESS: &str = "offline_access";

/// How long an unanswered consent page stays answerable.
const PENDING_CONSENT_TTL: TimeDelta = TimeDelta::hours(1);

/// Expired access tokens are swept after this many issuances (keeps each issue O(1) amortised).
const ACCESS_PRUNE_EVERY: u32 = 4096;

/// The lifetimes and switches of [`EmulatorConfig`], in the units the rules compute with.
/// No `Debug`: it holds the client secret.
#[derive(Clone)]
pub(crate) struct Policy {
    pub(crate) client_id: String,
    pub(crate) client_secret: String,
    pub(crate) access_token_ttl: TimeDelta,
    pub(crate) inactivity_expiry: TimeDelta,
    pub(crate) absolute_expiry: TimeDelta,
    pub(crate) reuse_leeway: TimeDelta,
    pub(crate) code_ttl: TimeDelta,
    pub(crate) revocation_kills_access_tokens: bool,
    pub(crate) refresh_error_variant: RefreshErrorVariant,
}

impl Policy {
    pub(crate) fn from_config(config: &EmulatorConfig) -> Self {
        let delta = |d: std::time::Duration| TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX);
        Self {
            client_id: config.client_id.clone(),
            client_secret: config.client_secret.clone(),
            access_token_ttl: delta(config.access_token_ttl),
            inactivity_expiry: delta(config.inactivity_expiry),
            absolute_expiry: delta(config.absolute_expiry),
            reuse_leeway: delta(config.reuse_leeway),
            code_ttl: delta(config.code_ttl),
            revocation_kills_access_tokens: config.revocation_kills_access_tokens,
            refresh_error_variant: config.refresh_error_variant,
        }
    }

    /// `expires_in` of token responses, whole seconds.
    pub(crate) fn expires_in_secs(&self) -> i64 {
        self.access_token_ttl.num_seconds()
    }
}

/// `at + by`, saturating instead of panicking on absurd lifetimes.
pub(crate) fn later(at: DateTime<Utc>, by: TimeDelta) -> DateTime<Utc> {
    at.checked_add_signed(by)
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// `at + by` for a delta of either sign, saturating at the ends of time instead of panicking.
pub(crate) fn shifted(at: DateTime<Utc>, by: TimeDelta) -> DateTime<Utc> {
    at.checked_add_signed(by)
        .unwrap_or(if by < TimeDelta::zero() {
            DateTime::<Utc>::MIN_UTC
        } else {
            DateTime::<Utc>::MAX_UTC
        })
}

/// A site (cloud id) and the products it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Site {
    pub(crate) cloud_id: String,
    pub(crate) name: String,
    pub(crate) products: Vec<Product>,
}

/// An Atlassian account.
#[derive(Debug, Clone)]
pub(crate) struct User {
    pub(crate) account_id: String,
    pub(crate) name: String,
    pub(crate) email: String,
    pub(crate) zoneinfo: String,
    pub(crate) jira_time_zone: String,
    /// Cloud ids the user can access (and so may grant).
    pub(crate) sites: Vec<String>,
    pub(crate) password_changed_at: Option<DateTime<Utc>>,
}

/// The app's grant for one account.
#[derive(Debug, Clone, Default)]
struct Grant {
    /// Granted cloud ids, in the order they were granted.
    sites: Vec<String>,
    scopes: Vec<String>,
    families: Vec<FamilyId>,
}

/// Identifies a token family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct FamilyId(u64);

/// Why a family was revoked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RevocationReason {
    /// A rotated token was presented outside the rules (breach detection).
    ReuseDetected,
    /// The user changed their password.
    PasswordChanged,
    /// The user revoked the app in "Connected apps".
    AppRevoked,
}

#[derive(Debug, Clone, Copy)]
struct Revocation {
    #[allow(dead_code)] // kept for debugging dumps; the rules only need the fact
    at: DateTime<Utc>,
    reason: RevocationReason,
}

/// All tokens descended from one authorization-code exchange.
#[derive(Debug)]
struct Family {
    account_id: String,
    /// First issue; the absolute expiry counts from here.
    created_at: DateTime<Utc>,
    /// Generation of the current refresh token (0: none issued, i.e. no `offline_access`).
    current_seq: u64,
    current: Option<TokenHash>,
    revoked: Option<Revocation>,
}

#[derive(Debug, Clone)]
struct RefreshRecord {
    family: FamilyId,
    seq: u64,
    issued_at: DateTime<Utc>,
    /// When this token stopped being current (first exchange, or superseded by a reuse).
    rotated_at: Option<DateTime<Utc>>,
}

#[derive(Debug)]
struct AccessRecord {
    account_id: String,
    family: FamilyId,
    expires_at: DateTime<Utc>,
}

#[derive(Debug)]
struct CodeRecord {
    account_id: String,
    client_id: String,
    redirect_uri: String,
    code_challenge: Option<String>,
    expires_at: DateTime<Utc>,
}

/// A validated `/authorize` request.
#[derive(Debug, Clone)]
pub(crate) struct AuthorizeRequest {
    pub(crate) client_id: String,
    /// Exactly as sent; the code exchange must present the same string.
    pub(crate) redirect_uri: String,
    pub(crate) scopes: Vec<String>,
    pub(crate) state: Option<String>,
    /// PKCE S256 challenge, when the client sent one.
    pub(crate) code_challenge: Option<String>,
}

/// A consent page waiting for the user's answer.
#[derive(Debug, Clone)]
pub(crate) struct PendingConsent {
    pub(crate) request: AuthorizeRequest,
    expires_at: DateTime<Utc>,
}

/// Tokens handed out by a successful exchange or refresh. No `Debug`: it holds live tokens.
pub(crate) struct IssuedTokens {
    pub(crate) access_token: String,
    pub(crate) refresh_token: Option<String>,
    /// Space-separated granted scopes.
    pub(crate) scope: String,
    pub(crate) account_id: String,
}

/// How a successful refresh was judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rotation {
    /// The current token was exchanged.
    Normal,
    /// The immediately previous token was exchanged inside the reuse leeway.
    ReuseInLeeway,
}

/// Why a refresh failed. Every variant answers the same 403 on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum RefreshRejection {
    #[error("unknown refresh token")]
    Unknown,
    #[error("token family revoked ({0:?})")]
    FamilyRevoked(RevocationReason),
    #[error("token family past its absolute expiry")]
    FamilyExpired,
    #[error("refresh token past its inactivity expiry")]
    Inactive,
    #[error("rotated refresh token reused outside the rules; family revoked")]
    ReuseDetected,
    #[error("the grant no longer includes offline_access")]
    OfflineAccessWithdrawn,
}

/// Why a code exchange failed. Every variant answers the same 403 on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum CodeRejection {
    #[error("unknown or already used code")]
    Unknown,
    #[error("code expired")]
    Expired,
    #[error("code issued to another client")]
    WrongClient,
    #[error("redirect_uri differs from the one used at /authorize")]
    RedirectMismatch,
    #[error("PKCE code_verifier missing or wrong")]
    PkceMismatch,
    #[error("the grant behind the code is gone")]
    GrantGone,
}

/// Why a consent could not be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ConsentError {
    #[error("unknown Atlassian account {0}")]
    UnknownAccount(String),
    #[error("the account cannot access site {0}")]
    SiteNotAccessible(String),
}

/// Why a control operation could not be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ControlError {
    #[error("unknown account {0}")]
    UnknownAccount(String),
    #[error("unknown site {0}")]
    UnknownSite(String),
    #[error("account {0} has not granted the app anything")]
    NoGrant(String),
    #[error("invalid IANA time zone {0:?}")]
    BadTimeZone(String),
}

/// The authenticated caller of a gateway endpoint: who, and what the grant allows right now.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    pub(crate) user: User,
    /// The grant's current scopes.
    pub(crate) scopes: Vec<String>,
    /// The grant's current sites, in grant order.
    pub(crate) sites: Vec<Site>,
}

/// A user as offered on the consent page.
#[derive(Debug, Clone)]
pub(crate) struct ConsentChoice {
    pub(crate) account_id: String,
    pub(crate) name: String,
    pub(crate) email: String,
    /// (cloud id, site name) the user can grant.
    pub(crate) sites: Vec<(String, String)>,
}

/// The whole emulated world. Guarded by one mutex in the server; never awaited while held.
pub(crate) struct State {
    policy: Policy,
    sites: HashMap<String, Site>,
    site_order: Vec<String>,
    users: HashMap<String, User>,
    user_order: Vec<String>,
    grants: HashMap<String, Grant>,
    families: HashMap<FamilyId, Family>,
    next_family: u64,
    refresh_tokens: HashMap<TokenHash, RefreshRecord>,
    access_tokens: HashMap<TokenHash, AccessRecord>,
    codes: HashMap<TokenHash, CodeRecord>,
    pending: HashMap<String, PendingConsent>,
    consent_queue: VecDeque<ConsentDecision>,
    counters: Counters,
    issued_since_prune: u32,
}

impl State {
    pub(crate) fn new(policy: Policy) -> Self {
        Self {
            policy,
            sites: HashMap::new(),
            site_order: Vec::new(),
            users: HashMap::new(),
            user_order: Vec::new(),
            grants: HashMap::new(),
            families: HashMap::new(),
            next_family: 1,
            refresh_tokens: HashMap::new(),
            access_tokens: HashMap::new(),
            codes: HashMap::new(),
            pending: HashMap::new(),
            consent_queue: VecDeque::new(),
            counters: Counters::default(),
            issued_since_prune: 0,
        }
    }

    pub(crate) fn policy(&self) -> &Policy {
        &self.policy
    }

    pub(crate) fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Records one gateway call and whether it was answered 401.
    pub(crate) fn count_api_call(&mut self, unauthorized: bool) {
        self.counters.api_calls += 1;
        if unauthorized {
            self.counters.unauthorized_api_calls += 1;
        }
    }

    // ----- directory -------------------------------------------------------------------------

    pub(crate) fn add_site(&mut self, name: &str, products: &[Product]) -> String {
        let cloud_id = uuid::Uuid::new_v4().to_string();
        let mut products = products.to_vec();
        products.sort();
        products.dedup();
        self.sites.insert(
            cloud_id.clone(),
            Site {
                cloud_id: cloud_id.clone(),
                name: name.to_owned(),
                products,
            },
        );
        self.site_order.push(cloud_id.clone());
        cloud_id
    }

    pub(crate) fn has_site(&self, cloud_id: &str) -> bool {
        self.sites.contains_key(cloud_id)
    }

    /// The products `cloud_id` runs; `None` for an unknown site.
    pub(crate) fn site_products(&self, cloud_id: &str) -> Option<&[Product]> {
        self.sites.get(cloud_id).map(|s| s.products.as_slice())
    }

    /// An account as the products render it.
    pub(crate) fn person(&self, account_id: &str) -> Option<Person> {
        self.users.get(account_id).map(|user| Person {
            account_id: user.account_id.clone(),
            display_name: user.name.clone(),
            email: user.email.clone(),
            time_zone: user.jira_time_zone.clone(),
        })
    }

    /// The accounts that can access `cloud_id`, in creation order.
    pub(crate) fn people_of_site(&self, cloud_id: &str) -> Vec<Person> {
        self.user_order
            .iter()
            .filter_map(|id| self.users.get(id))
            .filter(|user| user.sites.iter().any(|s| s == cloud_id))
            .filter_map(|user| self.person(&user.account_id))
            .collect()
    }

    pub(crate) fn has_user(&self, account_id: &str) -> bool {
        self.users.contains_key(account_id)
    }

    /// Adds a user after checking their sites and time zones.
    pub(crate) fn add_user(&mut self, user: NewUser) -> Result<String, ControlError> {
        for zone in [&user.zoneinfo, &user.jira_time_zone] {
            if zone.parse::<chrono_tz::Tz>().is_err() {
                return Err(ControlError::BadTimeZone(zone.clone()));
            }
        }
        if let Some(unknown) = user.sites.iter().find(|id| !self.has_site(id)) {
            return Err(ControlError::UnknownSite(unknown.clone()));
        }
        Ok(self.add_user_unchecked(user))
    }

    /// Adds a user as given (the in-process handle's path; it filters sites itself).
    pub(crate) fn add_user_unchecked(&mut self, user: NewUser) -> String {
        // The `NNNNNN:uuid` form of real account ids: it needs percent-encoding in query
        // strings, which is exactly what clients get wrong.
        let account_id = format!("712020:{}", uuid::Uuid::new_v4());
        let mut sites = user.sites;
        dedup_in_order(&mut sites);
        self.users.insert(
            account_id.clone(),
            User {
                account_id: account_id.clone(),
                name: user.name,
                email: user.email,
                zoneinfo: user.zoneinfo,
                jira_time_zone: user.jira_time_zone,
                sites,
                password_changed_at: None,
            },
        );
        self.user_order.push(account_id.clone());
        account_id
    }

    /// Users and their grantable sites, for the consent page.
    pub(crate) fn consent_choices(&self) -> Vec<ConsentChoice> {
        self.user_order
            .iter()
            .filter_map(|id| self.users.get(id))
            .map(|user| ConsentChoice {
                account_id: user.account_id.clone(),
                name: user.name.clone(),
                email: user.email.clone(),
                sites: user
                    .sites
                    .iter()
                    .filter_map(|id| self.sites.get(id))
                    .map(|site| (site.cloud_id.clone(), site.name.clone()))
                    .collect(),
            })
            .collect()
    }

    // ----- consent ---------------------------------------------------------------------------

    pub(crate) fn queue_consent(&mut self, decision: ConsentDecision) {
        self.consent_queue.push_back(decision);
    }

    pub(crate) fn next_queued_consent(&mut self) -> Option<ConsentDecision> {
        self.consent_queue.pop_front()
    }

    /// Parks an `/authorize` request behind a consent page; returns its id.
    pub(crate) fn park_consent(&mut self, request: AuthorizeRequest, now: DateTime<Utc>) -> String {
        self.pending.retain(|_, p| p.expires_at > now);
        let id = token::random_id();
        self.pending.insert(
            id.clone(),
            PendingConsent {
                request,
                expires_at: later(now, PENDING_CONSENT_TTL),
            },
        );
        id
    }

    /// Takes a parked request (single use); `None` when unknown or expired.
    pub(crate) fn take_consent(&mut self, id: &str, now: DateTime<Utc>) -> Option<PendingConsent> {
        self.pending.remove(id).filter(|p| p.expires_at > now)
    }

    /// Puts a parked request back (the user submitted something invalid and may retry).
    pub(crate) fn restore_consent(&mut self, id: String, pending: PendingConsent) {
        self.pending.insert(id, pending);
    }

    /// The user consents: `sites` (None: all of theirs) are added to the grant, its scopes are
    /// replaced by the requested ones, and a single-use code is minted.
    pub(crate) fn approve(
        &mut self,
        request: &AuthorizeRequest,
        account_id: &str,
        sites: Option<&[String]>,
        now: DateTime<Utc>,
    ) -> Result<String, ConsentError> {
        let user = self
            .users
            .get(account_id)
            .ok_or_else(|| ConsentError::UnknownAccount(account_id.to_owned()))?;
        let chosen: Vec<String> = match sites {
            None => user.sites.clone(),
            Some(sites) => {
                if let Some(denied) = sites.iter().find(|s| !user.sites.contains(s)) {
                    return Err(ConsentError::SiteNotAccessible(denied.clone()));
                }
                sites.to_vec()
            }
        };
        let grant = self.grants.entry(account_id.to_owned()).or_default();
        for site in chosen {
            if !grant.sites.contains(&site) {
                grant.sites.push(site);
            }
        }
        grant.scopes = request.scopes.clone();

        self.codes.retain(|_, c| c.expires_at > now);
        let expires_at = later(now, self.policy.code_ttl);
        let (code, hash) = token::mint(TokenKind::Code, now, Some(expires_at));
        self.codes.insert(
            hash,
            CodeRecord {
                account_id: account_id.to_owned(),
                client_id: request.client_id.clone(),
                redirect_uri: request.redirect_uri.clone(),
                code_challenge: request.code_challenge.clone(),
                expires_at,
            },
        );
        Ok(code)
    }

    // ----- token endpoint --------------------------------------------------------------------

    /// Exchanges an authorization code: single use (consumed by any presentation), valid for
    /// `code_ttl`, bound to the client and the exact `redirect_uri`. Starts a new family.
    pub(crate) fn exchange_code(
        &mut self,
        client_id: &str,
        code: &str,
        redirect_uri: &str,
        code_verifier: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<IssuedTokens, CodeRejection> {
        let result = self.try_exchange_code(client_id, code, redirect_uri, code_verifier, now);
        match &result {
            Ok(_) => self.counters.code_exchanges += 1,
            Err(_) => self.counters.invalid_grant_errors += 1,
        }
        result
    }

    fn try_exchange_code(
        &mut self,
        client_id: &str,
        code: &str,
        redirect_uri: &str,
        code_verifier: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<IssuedTokens, CodeRejection> {
        let record = self
            .codes
            .remove(&TokenHash::of(code))
            .ok_or(CodeRejection::Unknown)?;
        if now >= record.expires_at {
            return Err(CodeRejection::Expired);
        }
        if record.client_id != client_id {
            return Err(CodeRejection::WrongClient);
        }
        if record.redirect_uri != redirect_uri {
            return Err(CodeRejection::RedirectMismatch);
        }
        if let Some(challenge) = &record.code_challenge {
            match code_verifier {
                Some(verifier) if token::pkce_s256_matches(verifier, challenge) => {}
                _ => return Err(CodeRejection::PkceMismatch),
            }
        }
        let grant = self
            .grants
            .get_mut(&record.account_id)
            .ok_or(CodeRejection::GrantGone)?;
        let family = FamilyId(self.next_family);
        self.next_family += 1;
        grant.families.push(family);
        self.families.insert(
            family,
            Family {
                account_id: record.account_id.clone(),
                created_at: now,
                current_seq: 0,
                current: None,
                revoked: None,
            },
        );
        Ok(self.issue(family, now))
    }

    /// Exchanges a refresh token by Atlassian's documented rotation rules. In order:
    /// 1. unknown token, revoked family, or family older than `absolute_expiry` → rejected;
    /// 2. the current token: rejected if unused for longer than `inactivity_expiry` since its
    ///    issue, otherwise rotated (marked rotated at `now`) and a new current token issued;
    /// 3. the immediately previous token, within `reuse_leeway` of its rotation: allowed
    ///    (counted in `reuses_in_leeway`); the current token is superseded at `now` and a new
    ///    current token issued — so the chain stays linear and the superseded token gets its
    ///    own leeway, while the reused one is now two generations back;
    /// 4. any other rotated token (older, or the previous one after the leeway): breach — the
    ///    whole family is revoked (counted in `family_revocations`), so even the newest token
    ///    stops working.
    ///
    /// Password change and app revocation revoke families when they happen (so a later consent
    /// is unaffected even at the same instant). A grant without `offline_access` refreshes
    /// nothing.
    pub(crate) fn refresh(
        &mut self,
        presented: &str,
        now: DateTime<Utc>,
    ) -> Result<(IssuedTokens, Rotation), RefreshRejection> {
        let result = self.try_refresh(presented, now);
        match &result {
            Ok((_, rotation)) => {
                self.counters.refreshes += 1;
                if *rotation == Rotation::ReuseInLeeway {
                    self.counters.reuses_in_leeway += 1;
                }
            }
            Err(rejection) => {
                self.counters.invalid_grant_errors += 1;
                if *rejection == RefreshRejection::ReuseDetected {
                    self.counters.family_revocations += 1;
                }
            }
        }
        result
    }

    fn try_refresh(
        &mut self,
        presented: &str,
        now: DateTime<Utc>,
    ) -> Result<(IssuedTokens, Rotation), RefreshRejection> {
        let hash = TokenHash::of(presented);
        let record = self
            .refresh_tokens
            .get(&hash)
            .cloned()
            .ok_or(RefreshRejection::Unknown)?;
        let family = self
            .families
            .get(&record.family)
            .ok_or(RefreshRejection::Unknown)?;
        if let Some(revocation) = family.revoked {
            return Err(RefreshRejection::FamilyRevoked(revocation.reason));
        }
        if now - family.created_at > self.policy.absolute_expiry {
            return Err(RefreshRejection::FamilyExpired);
        }
        let offline = self
            .grants
            .get(&family.account_id)
            .is_some_and(|g| g.scopes.iter().any(|s| s == OFFLINE_ACCESS));
        if !offline {
            return Err(RefreshRejection::OfflineAccessWithdrawn);
        }
        let rotation = match record.rotated_at {
            None => {
                if now - record.issued_at > self.policy.inactivity_expiry {
                    return Err(RefreshRejection::Inactive);
                }
                Rotation::Normal
            }
            Some(rotated_at) => {
                let immediately_previous = record.seq + 1 == family.current_seq;
                if !(immediately_previous && now - rotated_at <= self.policy.reuse_leeway) {
                    self.revoke_family(record.family, RevocationReason::ReuseDetected, now);
                    tracing::info!(
                        account.id = %family_account(&self.families, record.family),
                        "emulator: rotated refresh token reused; family revoked"
                    );
                    return Err(RefreshRejection::ReuseDetected);
                }
                Rotation::ReuseInLeeway
            }
        };
        // The token leaving "current" is the presented one (normal) or the current one (reuse).
        let leaving = match rotation {
            Rotation::Normal => Some(hash),
            Rotation::ReuseInLeeway => family.current,
        };
        if let Some(record) = leaving.and_then(|h| self.refresh_tokens.get_mut(&h)) {
            record.rotated_at.get_or_insert(now);
        }
        Ok((self.issue(record.family, now), rotation))
    }

    /// Issues an access token for `family` and, when the grant holds `offline_access`, the
    /// family's next refresh token.
    fn issue(&mut self, family_id: FamilyId, now: DateTime<Utc>) -> IssuedTokens {
        let account_id = family_account(&self.families, family_id);
        let scopes = self
            .grants
            .get(&account_id)
            .map(|g| g.scopes.clone())
            .unwrap_or_default();

        self.issued_since_prune += 1;
        if self.issued_since_prune >= ACCESS_PRUNE_EVERY {
            self.issued_since_prune = 0;
            self.access_tokens.retain(|_, a| a.expires_at > now);
        }
        let expires_at = later(now, self.policy.access_token_ttl);
        let (access_token, access_hash) = token::mint(TokenKind::Access, now, Some(expires_at));
        self.access_tokens.insert(
            access_hash,
            AccessRecord {
                account_id: account_id.clone(),
                family: family_id,
                expires_at,
            },
        );

        let mut refresh_token = None;
        if scopes.iter().any(|s| s == OFFLINE_ACCESS)
            && let Some(family) = self.families.get_mut(&family_id)
        {
            let (token, hash) = token::mint(TokenKind::Refresh, now, None);
            family.current_seq += 1;
            family.current = Some(hash);
            self.refresh_tokens.insert(
                hash,
                RefreshRecord {
                    family: family_id,
                    seq: family.current_seq,
                    issued_at: now,
                    rotated_at: None,
                },
            );
            refresh_token = Some(token);
        }
        IssuedTokens {
            access_token,
            refresh_token,
            scope: scopes.join(" "),
            account_id,
        }
    }

    fn revoke_family(&mut self, id: FamilyId, reason: RevocationReason, now: DateTime<Utc>) {
        if let Some(family) = self.families.get_mut(&id) {
            family.revoked.get_or_insert(Revocation { at: now, reason });
        }
    }

    fn revoke_all_families(
        &mut self,
        account_id: &str,
        reason: RevocationReason,
        now: DateTime<Utc>,
    ) {
        let ids = self
            .grants
            .get(account_id)
            .map(|g| g.families.clone())
            .unwrap_or_default();
        for id in ids {
            self.revoke_family(id, reason, now);
        }
        self.codes.retain(|_, c| c.account_id != account_id);
    }

    // ----- gateway ---------------------------------------------------------------------------

    /// Resolves a bearer access token. `None` for unknown, expired, or (when configured)
    /// revoked-family tokens.
    pub(crate) fn authenticate(&self, access_token: &str, now: DateTime<Utc>) -> Option<Caller> {
        let record = self.access_tokens.get(&TokenHash::of(access_token))?;
        if now >= record.expires_at {
            return None;
        }
        if self.policy.revocation_kills_access_tokens
            && self
                .families
                .get(&record.family)
                .is_none_or(|f| f.revoked.is_some())
        {
            return None;
        }
        let user = self.users.get(&record.account_id)?;
        let grant = self.grants.get(&record.account_id)?;
        Some(Caller {
            user: user.clone(),
            scopes: grant.scopes.clone(),
            sites: grant
                .sites
                .iter()
                .filter_map(|id| self.sites.get(id).cloned())
                .collect(),
        })
    }

    // ----- account events --------------------------------------------------------------------

    fn user_mut(&mut self, account_id: &str) -> Result<&mut User, ControlError> {
        self.users
            .get_mut(account_id)
            .ok_or_else(|| ControlError::UnknownAccount(account_id.to_owned()))
    }

    fn grant_mut(&mut self, account_id: &str) -> Result<&mut Grant, ControlError> {
        self.user_mut(account_id)?;
        self.grants
            .get_mut(account_id)
            .ok_or_else(|| ControlError::NoGrant(account_id.to_owned()))
    }

    /// The user revokes the app: every family dies, unused codes die, the grant is emptied
    /// (so a later consent starts from no sites).
    pub(crate) fn revoke_app(
        &mut self,
        account_id: &str,
        now: DateTime<Utc>,
    ) -> Result<(), ControlError> {
        self.user_mut(account_id)?;
        self.revoke_all_families(account_id, RevocationReason::AppRevoked, now);
        if let Some(grant) = self.grants.get_mut(account_id) {
            grant.sites.clear();
            grant.scopes.clear();
        }
        Ok(())
    }

    /// The user changes their password: every family started so far dies (later consents are
    /// unaffected), and unused codes die.
    pub(crate) fn change_password(
        &mut self,
        account_id: &str,
        now: DateTime<Utc>,
    ) -> Result<(), ControlError> {
        self.user_mut(account_id)?.password_changed_at = Some(now);
        self.revoke_all_families(account_id, RevocationReason::PasswordChanged, now);
        Ok(())
    }

    /// Drops a site from the grant.
    pub(crate) fn revoke_site(
        &mut self,
        account_id: &str,
        cloud_id: &str,
    ) -> Result<(), ControlError> {
        if !self.has_site(cloud_id) {
            return Err(ControlError::UnknownSite(cloud_id.to_owned()));
        }
        self.grant_mut(account_id)?.sites.retain(|s| s != cloud_id);
        Ok(())
    }

    /// Gives a site back to the grant (a site admin restored the user's product access).
    pub(crate) fn restore_site(
        &mut self,
        account_id: &str,
        cloud_id: &str,
    ) -> Result<(), ControlError> {
        if !self.has_site(cloud_id) {
            return Err(ControlError::UnknownSite(cloud_id.to_owned()));
        }
        let grant = self.grant_mut(account_id)?;
        if !grant.sites.iter().any(|s| s == cloud_id) {
            grant.sites.push(cloud_id.to_owned());
        }
        Ok(())
    }

    /// Replaces the grant's scopes.
    pub(crate) fn set_scopes(
        &mut self,
        account_id: &str,
        mut scopes: Vec<String>,
    ) -> Result<(), ControlError> {
        dedup_in_order(&mut scopes);
        self.grant_mut(account_id)?.scopes = scopes;
        Ok(())
    }
}

fn family_account(families: &HashMap<FamilyId, Family>, id: FamilyId) -> String {
    families
        .get(&id)
        .map(|f| f.account_id.clone())
        .unwrap_or_default()
}

/// Removes later duplicates, keeping first occurrences in place.
pub(crate) fn dedup_in_order(items: &mut Vec<String>) {
    let mut seen = std::collections::HashSet::new();
    items.retain(|item| seen.insert(item.clone()));
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL_SCOPES: &[&str] = &[
        "read:jira-work",
        "read:jira-user",
        "read:space:confluence",
        "read:me",
        "offline_access",
    ];

    struct World {
        state: State,
        account: String,
        site: String,
        now: DateTime<Utc>,
    }

    impl World {
        fn new() -> Self {
            Self::with(EmulatorConfig::default())
        }

        fn with(config: EmulatorConfig) -> Self {
            let mut state = State::new(Policy::from_config(&config));
            let site = state.add_site("acme", &[Product::Jira, Product::Confluence]);
            let account = state
                .add_user(NewUser {
                    name: "Mia Krystof".into(),
                    email: "mia@example.com".into(),
                    zoneinfo: "Australia/Sydney".into(),
                    jira_time_zone: "Australia/Sydney".into(),
                    sites: vec![site.clone()],
                })
                .expect("valid user");
            let now = DateTime::parse_from_rfc3339("2026-11-22T09:00:00Z")
                .expect("valid instant")
                .with_timezone(&Utc);
            Self {
                state,
                account,
                site,
                now,
            }
        }

        fn request(&self, scopes: &[&str]) -> AuthorizeRequest {
            AuthorizeRequest {
                client_id: "emulator-client".into(),
                redirect_uri: "https://app.example.com/callback".into(),
                scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
                state: Some("xyz".into()),
                code_challenge: None,
            }
        }

        /// Consent plus code exchange; returns the first tokens.
        fn connect(&mut self, scopes: &[&str]) -> IssuedTokens {
            let request = self.request(scopes);
            let code = self
                .state
                .approve(&request, &self.account.clone(), None, self.now)
                .expect("consent");
            self.state
                .exchange_code(
                    "emulator-client",
                    &code,
                    "https://app.example.com/callback",
                    None,
                    self.now,
                )
                .expect("exchange")
        }

        fn advance(&mut self, by: TimeDelta) {
            self.now += by;
        }

        fn refresh(&mut self, token: &str) -> Result<(IssuedTokens, Rotation), RefreshRejection> {
            self.state.refresh(token, self.now)
        }
    }

    fn refresh_token(tokens: &IssuedTokens) -> String {
        tokens
            .refresh_token
            .clone()
            .expect("offline_access grants a refresh token")
    }

    #[test]
    fn current_token_rotates_and_the_presented_one_stops_being_current() {
        let mut w = World::new();
        let first = refresh_token(&w.connect(ALL_SCOPES));
        w.advance(TimeDelta::minutes(30));
        let (second, rotation) = w.refresh(&first).expect("current token rotates");
        assert_eq!(rotation, Rotation::Normal);
        let second = refresh_token(&second);
        assert_ne!(first, second);
        w.advance(TimeDelta::minutes(30));
        let (third, rotation) = w.refresh(&second).expect("new token is current");
        assert_eq!(rotation, Rotation::Normal);
        assert!(third.refresh_token.is_some());
        assert_eq!(w.state.counters().refreshes, 2);
    }

    #[test]
    fn reuse_of_the_previous_token_inside_the_leeway_is_allowed_and_counted() {
        let mut w = World::new();
        let first = refresh_token(&w.connect(ALL_SCOPES));
        let second = refresh_token(&w.refresh(&first).expect("rotate").0);
        w.advance(TimeDelta::minutes(9));
        let (third, rotation) = w.refresh(&first).expect("reuse inside leeway");
        assert_eq!(rotation, Rotation::ReuseInLeeway);
        assert_eq!(w.state.counters().reuses_in_leeway, 1);
        // The token superseded by the reuse is now the previous one and has its own leeway.
        w.advance(TimeDelta::minutes(5));
        let (_, rotation) = w
            .refresh(&second)
            .expect("superseded token inside its leeway");
        assert_eq!(rotation, Rotation::ReuseInLeeway);
        drop(third);
        assert_eq!(w.state.counters().family_revocations, 0);
    }

    #[test]
    fn reuse_of_the_previous_token_after_the_leeway_revokes_the_whole_family() {
        let mut w = World::new();
        let first = refresh_token(&w.connect(ALL_SCOPES));
        let (second, _) = w.refresh(&first).expect("rotate");
        let second = refresh_token(&second);
        w.advance(TimeDelta::minutes(11));
        assert_eq!(
            w.refresh(&first).err(),
            Some(RefreshRejection::ReuseDetected)
        );
        assert_eq!(
            w.refresh(&second).err(),
            Some(RefreshRejection::FamilyRevoked(
                RevocationReason::ReuseDetected
            ))
        );
        let counters = w.state.counters();
        assert_eq!(counters.family_revocations, 1);
        assert_eq!(counters.invalid_grant_errors, 2);
    }

    #[test]
    fn reuse_of_an_older_token_revokes_the_family_even_inside_the_leeway() {
        let mut w = World::new();
        let first = refresh_token(&w.connect(ALL_SCOPES));
        let second = refresh_token(&w.refresh(&first).expect("rotate").0);
        let third = refresh_token(&w.refresh(&second).expect("rotate").0);
        w.advance(TimeDelta::minutes(1));
        assert_eq!(
            w.refresh(&first).err(),
            Some(RefreshRejection::ReuseDetected)
        );
        assert!(matches!(
            w.refresh(&third).err(),
            Some(RefreshRejection::FamilyRevoked(_))
        ));
    }

    #[test]
    fn idle_token_expires_after_the_inactivity_window_and_rotation_resets_it() {
        let mut w = World::new();
        let first = refresh_token(&w.connect(ALL_SCOPES));
        w.advance(TimeDelta::days(89));
        let second = refresh_token(&w.refresh(&first).expect("inside 90 days").0);
        w.advance(TimeDelta::days(90));
        let third = refresh_token(
            &w.refresh(&second)
                .expect("exactly 90 days is still alive")
                .0,
        );
        w.advance(TimeDelta::days(90) + TimeDelta::seconds(1));
        assert_eq!(w.refresh(&third).err(), Some(RefreshRejection::Inactive));
    }

    #[test]
    fn family_dies_at_the_absolute_expiry_despite_rotation() {
        let mut w = World::new();
        let mut token = refresh_token(&w.connect(ALL_SCOPES));
        for _ in 0..5 {
            w.advance(TimeDelta::days(73));
            token = refresh_token(&w.refresh(&token).expect("inside 365 days").0);
        }
        w.advance(TimeDelta::seconds(1));
        assert_eq!(
            w.refresh(&token).err(),
            Some(RefreshRejection::FamilyExpired)
        );
    }

    #[test]
    fn password_change_kills_existing_families_but_not_a_later_consent() {
        let mut w = World::new();
        let old = w.connect(ALL_SCOPES);
        let account = w.account.clone();
        w.state
            .change_password(&account, w.now)
            .expect("known user");
        assert_eq!(
            w.refresh(&refresh_token(&old)).err(),
            Some(RefreshRejection::FamilyRevoked(
                RevocationReason::PasswordChanged
            ))
        );
        assert!(w.state.authenticate(&old.access_token, w.now).is_none());
        // Same instant: the new consent is after the change, so it works.
        let new = w.connect(ALL_SCOPES);
        assert!(w.refresh(&refresh_token(&new)).is_ok());
        assert_eq!(w.state.counters().family_revocations, 0);
    }

    #[test]
    fn app_revocation_kills_families_and_empties_the_grant() {
        let mut w = World::new();
        let tokens = w.connect(ALL_SCOPES);
        let account = w.account.clone();
        w.state.revoke_app(&account, w.now).expect("known user");
        assert_eq!(
            w.refresh(&refresh_token(&tokens)).err(),
            Some(RefreshRejection::FamilyRevoked(
                RevocationReason::AppRevoked
            ))
        );
        assert!(w.state.authenticate(&tokens.access_token, w.now).is_none());
    }

    #[test]
    fn access_tokens_outlive_a_revoked_family_when_so_configured() {
        let mut w = World::with(EmulatorConfig {
            revocation_kills_access_tokens: false,
            ..EmulatorConfig::default()
        });
        let tokens = w.connect(ALL_SCOPES);
        let account = w.account.clone();
        w.state.revoke_app(&account, w.now).expect("known user");
        let caller = w
            .state
            .authenticate(&tokens.access_token, w.now)
            .expect("lives until exp");
        assert!(caller.sites.is_empty(), "but the grant is empty");
        w.advance(TimeDelta::hours(1));
        assert!(w.state.authenticate(&tokens.access_token, w.now).is_none());
    }

    #[test]
    fn access_token_expires_after_its_ttl() {
        let mut w = World::new();
        let tokens = w.connect(ALL_SCOPES);
        w.advance(TimeDelta::minutes(59));
        assert!(w.state.authenticate(&tokens.access_token, w.now).is_some());
        w.advance(TimeDelta::minutes(1));
        assert!(w.state.authenticate(&tokens.access_token, w.now).is_none());
        assert!(w.state.authenticate("eyJunknown", w.now).is_none());
    }

    #[test]
    fn unknown_refresh_token_is_rejected_without_revoking_anything() {
        let mut w = World::new();
        w.connect(ALL_SCOPES);
        assert_eq!(
            w.refresh("eyJnot-a-token").err(),
            Some(RefreshRejection::Unknown)
        );
        assert_eq!(w.state.counters().family_revocations, 0);
    }

    #[test]
    fn codes_are_single_use_bound_to_the_redirect_uri_and_expire() {
        let mut w = World::new();
        let request = w.request(ALL_SCOPES);
        let account = w.account.clone();
        let exchange = |w: &mut World, code: &str, redirect: &str| {
            w.state
                .exchange_code("emulator-client", code, redirect, None, w.now)
        };

        let code = w
            .state
            .approve(&request, &account, None, w.now)
            .expect("consent");
        assert!(exchange(&mut w, &code, "https://app.example.com/callback").is_ok());
        assert_eq!(
            exchange(&mut w, &code, "https://app.example.com/callback").err(),
            Some(CodeRejection::Unknown)
        );

        let code = w
            .state
            .approve(&request, &account, None, w.now)
            .expect("consent");
        assert_eq!(
            exchange(&mut w, &code, "https://app.example.com/callback/").err(),
            Some(CodeRejection::RedirectMismatch)
        );

        let code = w
            .state
            .approve(&request, &account, None, w.now)
            .expect("consent");
        w.advance(TimeDelta::minutes(10));
        assert_eq!(
            exchange(&mut w, &code, "https://app.example.com/callback").err(),
            Some(CodeRejection::Expired)
        );
        assert_eq!(w.state.counters().code_exchanges, 1);
        assert_eq!(w.state.counters().invalid_grant_errors, 3);
    }

    #[test]
    fn pkce_verifier_must_match_the_challenge() {
        let mut w = World::new();
        let mut request = w.request(ALL_SCOPES);
        request.code_challenge = Some("xjQfGxGBmKFum-5sx-Mi8CDB-HmfYYBFxQNoyu7YuoU".into());
        let account = w.account.clone();
        let redirect = "https://app.example.com/callback";
        let code = w
            .state
            .approve(&request, &account, None, w.now)
            .expect("consent");
        assert_eq!(
            w.state
                .exchange_code("emulator-client", &code, redirect, Some("wrong"), w.now)
                .err(),
            Some(CodeRejection::PkceMismatch)
        );
        let code = w
            .state
            .approve(&request, &account, None, w.now)
            .expect("consent");
        let verifier = "dBjftJeZ4CVP-mJ92K9qEJ5yWIMsW0Lpt9uDf6x5v3k";
        assert!(
            w.state
                .exchange_code("emulator-client", &code, redirect, Some(verifier), w.now)
                .is_ok()
        );
    }

    #[test]
    fn no_refresh_token_without_offline_access() {
        let mut w = World::new();
        let tokens = w.connect(&["read:me", "read:jira-user"]);
        assert!(tokens.refresh_token.is_none());
        assert_eq!(tokens.scope, "read:me read:jira-user");
    }

    #[test]
    fn reconsent_adds_sites_replaces_scopes_and_the_old_family_keeps_working() {
        let mut w = World::new();
        let second_site = w.state.add_site("beta", &[Product::Jira]);
        let account = w.account.clone();
        w.state
            .users
            .get_mut(&account)
            .expect("user")
            .sites
            .push(second_site.clone());

        let request = w.request(ALL_SCOPES);
        let first_site = [w.site.clone()];
        let code = w
            .state
            .approve(&request, &account, Some(&first_site), w.now)
            .expect("consent");
        let old = w
            .state
            .exchange_code("emulator-client", &code, &request.redirect_uri, None, w.now)
            .expect("exchange");

        let narrower = w.request(&["read:jira-work", "offline_access"]);
        let code = w
            .state
            .approve(
                &narrower,
                &account,
                Some(std::slice::from_ref(&second_site)),
                w.now,
            )
            .expect("second consent");
        w.state
            .exchange_code(
                "emulator-client",
                &code,
                &narrower.redirect_uri,
                None,
                w.now,
            )
            .expect("exchange");

        let caller = w
            .state
            .authenticate(&old.access_token, w.now)
            .expect("old token alive");
        let site_ids: Vec<_> = caller.sites.iter().map(|s| s.cloud_id.clone()).collect();
        assert_eq!(site_ids, vec![w.site.clone(), second_site]);
        assert_eq!(caller.scopes, vec!["read:jira-work", "offline_access"]);
        let (rotated, _) = w.refresh(&refresh_token(&old)).expect("old family alive");
        assert_eq!(rotated.scope, "read:jira-work offline_access");
    }

    #[test]
    fn consent_rejects_unknown_accounts_and_foreign_sites() {
        let mut w = World::new();
        let foreign = w.state.add_site("other", &[Product::Jira]);
        let request = w.request(ALL_SCOPES);
        let account = w.account.clone();
        assert!(matches!(
            w.state.approve(&request, "nobody", None, w.now),
            Err(ConsentError::UnknownAccount(_))
        ));
        assert_eq!(
            w.state
                .approve(
                    &request,
                    &account,
                    Some(std::slice::from_ref(&foreign)),
                    w.now
                )
                .err(),
            Some(ConsentError::SiteNotAccessible(foreign))
        );
    }

    #[test]
    fn withdrawing_offline_access_stops_refreshes() {
        let mut w = World::new();
        let tokens = w.connect(ALL_SCOPES);
        let account = w.account.clone();
        w.state
            .set_scopes(&account, vec!["read:me".into()])
            .expect("grant exists");
        assert_eq!(
            w.refresh(&refresh_token(&tokens)).err(),
            Some(RefreshRejection::OfflineAccessWithdrawn)
        );
    }
}
