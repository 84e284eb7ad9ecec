//! Token newtypes: they never print, and are only exposed where they go on the wire or get
//! sealed.

use std::fmt;

use secrecy::{ExposeSecret, SecretString};

macro_rules! secret_newtype {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone)]
        pub struct $name(SecretString);

        impl $name {
            /// Wraps a value received from Atlassian or opened from the store.
            pub fn new(value: impl Into<String>) -> Self {
                Self(SecretString::from(value.into()))
            }

            /// The raw value, for a request header or body, or for sealing.
            pub fn expose(&self) -> &str {
                self.0.expose_secret()
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(concat!(stringify!($name), "([redacted])"))
            }
        }
    };
}

secret_newtype!(
    /// A bearer token for API calls; lives about an hour.
    AccessToken
);
secret_newtype!(
    /// A rotating refresh token; every use returns a new one.
    RefreshToken
);
secret_newtype!(
    /// A single-use authorization code from the consent redirect.
    AuthorizationCode
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_never_print() {
        let token = RefreshToken::new("eyJsecret");
        assert_eq!(format!("{token:?}"), "RefreshToken([redacted])");
    }
}
