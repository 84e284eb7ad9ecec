//! The admin session: a signed, expiring cookie set by the login form, and the CSRF token
//! derived from it.
//!
//! The cookie holds `<expires unix seconds>.<nonce>.<tag>`, where the tag is an HMAC-SHA256
//! over the first two parts. The HMAC key is derived from both the admin token and the
//! current crypto key, so changing either one logs every browser out, and a session cookie
//! can never pass for an invite link (those are signed with another derived key). Nothing
//! is stored server-side; logging out clears the cookie in the browser.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, TimeDelta, Utc};
use hmac::{Hmac, KeyInit, Mac};
use secrecy::ExposeSecret;
use sha2::Sha256;
use zeroize::Zeroizing;

use super::super::auth::constant_time_eq;
use crate::app::App;
use crate::crypto::random_token;

/// The cookie carrying an admin session.
pub const SESSION_COOKIE: &str = "atlassync_admin";
/// How long a login lasts.
pub const SESSION_TTL: TimeDelta = TimeDelta::hours(12);

/// The key sessions and CSRF tokens are signed with. Never printed.
pub struct SessionKey(Zeroizing<[u8; 32]>);

impl fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionKey(..)")
    }
}

impl SessionKey {
    /// The key for the configured admin token; `None` when no admin token is set (the admin
    /// page is then disabled).
    pub fn of(app: &App) -> Option<Self> {
        let token = app.config.http.admin_token.as_ref()?;
        // The keyring's signature of a fixed label is a secret only the crypto key yields.
        let anchor = Zeroizing::new(app.keyring().sign(b"atlassync admin session key v1"));
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(token.expose_secret().as_bytes())
            .expect("any key length");
        mac.update(anchor.as_bytes());
        Some(Self(Zeroizing::new(mac.finalize().into_bytes().into())))
    }

    fn tag(&self, purpose: &[u8], value: &[u8]) -> [u8; 32] {
        let mut mac =
            <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0[..]).expect("any key length");
        mac.update(purpose);
        mac.update(b"\0");
        mac.update(value);
        mac.finalize().into_bytes().into()
    }

    /// A new session valid until `now` + [`SESSION_TTL`].
    pub fn issue(&self, now: DateTime<Utc>) -> Session {
        let expires_at = now + SESSION_TTL;
        let body = format!("{}.{}", expires_at.timestamp(), &random_token()[..22]);
        let tag = URL_SAFE_NO_PAD.encode(self.tag(b"session", body.as_bytes()));
        Session {
            cookie_value: Zeroizing::new(format!("{body}.{tag}")),
            expires_at,
        }
    }

    /// The session a cookie value carries, if it is genuine and unexpired at `now`.
    pub fn verify(&self, cookie_value: &str, now: DateTime<Utc>) -> Option<Session> {
        let (body, tag) = cookie_value.rsplit_once('.')?;
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        if !constant_time_eq(&tag, &self.tag(b"session", body.as_bytes())) {
            return None;
        }
        let (expires, _nonce) = body.split_once('.')?;
        let expires_at = DateTime::from_timestamp(expires.parse().ok()?, 0)?;
        // A genuine cookie never outlives its TTL; the bound also guards a clock set back.
        if expires_at <= now || expires_at > now + SESSION_TTL {
            return None;
        }
        Some(Session {
            cookie_value: Zeroizing::new(cookie_value.to_owned()),
            expires_at,
        })
    }

    /// The CSRF token of `session`: every state-changing form carries it.
    pub fn csrf_token(&self, session: &Session) -> String {
        URL_SAFE_NO_PAD.encode(self.tag(b"csrf", session.cookie_value.as_bytes()))
    }

    /// Whether `presented` is the CSRF token of `session` (compared in constant time).
    pub fn csrf_matches(&self, session: &Session, presented: &str) -> bool {
        constant_time_eq(presented.as_bytes(), self.csrf_token(session).as_bytes())
    }
}

/// A logged-in browser. Never printed: its cookie value is a credential.
pub struct Session {
    cookie_value: Zeroizing<String>,
    /// When the login ends.
    pub expires_at: DateTime<Utc>,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Session(expires {})", self.expires_at)
    }
}

impl Session {
    /// The `Set-Cookie` value that stores this session in the browser: HttpOnly,
    /// SameSite=Strict, scoped to `/admin`, `Secure` behind https.
    pub fn set_cookie(&self, secure: bool) -> String {
        format!(
            "{SESSION_COOKIE}={}; Path=/admin; HttpOnly; SameSite=Strict; Max-Age={}{}",
            self.cookie_value.as_str(),
            SESSION_TTL.num_seconds(),
            if secure { "; Secure" } else { "" }
        )
    }
}

/// The `Set-Cookie` value that removes the session cookie.
pub fn clear_cookie(secure: bool) -> String {
    format!(
        "{SESSION_COOKIE}=; Path=/admin; HttpOnly; SameSite=Strict; Max-Age=0{}",
        if secure { "; Secure" } else { "" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> SessionKey {
        SessionKey(Zeroizing::new([byte; 32]))
    }

    #[test]
    fn sessions_verify_until_they_expire_and_only_under_their_key() {
        #[allow(clippy::disallowed_methods)] // any instant will do in this test
        let now = Utc::now();
        let session = key(1).issue(now);
        let value = session.cookie_value.as_str().to_owned();
        assert!(key(1).verify(&value, now + TimeDelta::hours(11)).is_some());
        assert!(key(1).verify(&value, now + TimeDelta::hours(13)).is_none());
        assert!(key(2).verify(&value, now).is_none());
        let forged = format!(
            "{}{}",
            if value.starts_with('1') { '2' } else { '1' },
            &value[1..]
        );
        assert!(key(1).verify(&forged, now).is_none());
        assert!(key(1).verify("", now).is_none());
        assert!(key(1).verify("a.b.c", now).is_none());
    }

    #[test]
    fn the_csrf_token_is_bound_to_the_session() {
        #[allow(clippy::disallowed_methods)] // any instant will do in this test
        let now = Utc::now();
        let (one, two) = (key(1).issue(now), key(1).issue(now));
        let token = key(1).csrf_token(&one);
        assert!(key(1).csrf_matches(&one, &token));
        assert!(!key(1).csrf_matches(&two, &token));
        assert!(!key(1).csrf_matches(&one, ""));
        assert!(!format!("{one:?}").contains(one.cookie_value.as_str()));
    }
}
