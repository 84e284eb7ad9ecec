//! Sealing secrets at rest and signing links.
//!
//! Tokens are sealed with XChaCha20-Poly1305 (random 192-bit nonces are safe) under the
//! current key; the key id is stored beside each ciphertext so older keys, listed in
//! `crypto.previous_key_files`, can still open rows written before a rotation. The sealed
//! value is bound to its row (associated data), so a ciphertext copied into another grant's
//! row does not open.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use chacha20poly1305::aead::{Aead, Generate, KeyInit, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

const NONCE_LEN: usize = 24;

/// Why a key file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Unreadable {
        /// The key file.
        path: PathBuf,
        /// Why it could not be read.
        source: std::io::Error,
    },
    /// The file does not hold 32 base64-encoded bytes.
    #[error(
        "{path} must hold 32 random bytes, base64-encoded on one line (openssl rand -base64 32)"
    )]
    Malformed {
        /// The key file.
        path: PathBuf,
    },
    /// A previous key failed to load; reported under `crypto.previous_key_files`.
    #[error("previous key {path}: {reason}")]
    Previous {
        /// The key file, one of `crypto.previous_key_files`.
        path: PathBuf,
        /// The underlying error, as for the current key.
        reason: String,
    },
}

/// Why a sealed value could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// No configured key has the stored key id: a previous key was removed too early.
    #[error("sealed with key `{0}`, which is not configured (add it to crypto.previous_key_files)")]
    UnknownKey(String),
    /// The key is known but the value does not authenticate: altered, or bound to another row.
    #[error(
        "sealed value does not authenticate under key `{0}` (tampered, or bound to another row)"
    )]
    Corrupt(String),
}

/// A value sealed under one key: `nonce || ciphertext+tag`, and the key's id.
#[derive(Clone, PartialEq, Eq)]
pub struct Sealed {
    /// Which key sealed it: the first 4 bytes of the key's SHA-256, in hex.
    pub key_id: String,
    /// The 24-byte nonce, then the ciphertext with its tag.
    pub bytes: Vec<u8>,
}

impl fmt::Debug for Sealed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sealed(key {}, {} bytes)", self.key_id, self.bytes.len())
    }
}

struct SealingKey {
    id: String,
    aead: XChaCha20Poly1305,
    mac_key: Zeroizing<[u8; 32]>,
}

impl SealingKey {
    fn from_bytes(bytes: &[u8; 32]) -> Self {
        // The id is a digest of the key, so operators never have to name keys by hand.
        let id = hex(&Sha256::digest(bytes)[..4]);
        // Invite signatures use a key derived for that purpose alone.
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(bytes).expect("any key length");
        mac.update(b"atlassync link signing v1");
        let mac_key = Zeroizing::new(mac.finalize().into_bytes().into());
        Self {
            id,
            aead: XChaCha20Poly1305::new(bytes.into()),
            mac_key,
        }
    }
}

/// The configured keys: one current (seals and signs), any number of previous (open and
/// verify only).
#[derive(Clone)]
pub struct Keyring {
    keys: Arc<Vec<SealingKey>>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|k| k.id.as_str()).collect();
        write!(f, "Keyring(key ids {ids:?})")
    }
}

impl Keyring {
    /// Loads the current key and any previous ones.
    pub fn from_files(current: &Path, previous: &[PathBuf]) -> Result<Self, KeyringError> {
        let mut keys = vec![read_key_file(current)?];
        for path in previous {
            let key = read_key_file(path).map_err(|e| KeyringError::Previous {
                path: path.clone(),
                reason: e.to_string(),
            })?;
            keys.push(key);
        }
        Ok(Self {
            keys: Arc::new(keys),
        })
    }

    /// A keyring from raw key bytes, current first (tests and the demo).
    pub fn from_keys(keys: &[[u8; 32]]) -> Self {
        assert!(!keys.is_empty(), "a keyring needs a current key");
        Self {
            keys: Arc::new(keys.iter().map(SealingKey::from_bytes).collect()),
        }
    }

    /// A fresh random 32-byte key, base64-encoded as a key file holds it.
    pub fn generate_key_file_contents() -> String {
        let key = Key::generate();
        STANDARD.encode(key)
    }

    /// The id of the key new values are sealed under.
    pub fn current_key_id(&self) -> &str {
        &self.keys[0].id
    }

    /// Seals `plaintext`, bound to `context` (e.g. the grant id and the column).
    pub fn seal(&self, plaintext: &[u8], context: &[u8]) -> Sealed {
        let key = &self.keys[0];
        let nonce = XNonce::generate();
        let ciphertext = key
            .aead
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext,
                    aad: context,
                },
            )
            .expect("XChaCha20-Poly1305 encryption does not fail for in-memory buffers");
        let mut bytes = Vec::with_capacity(NONCE_LEN + ciphertext.len());
        bytes.extend_from_slice(&nonce);
        bytes.extend_from_slice(&ciphertext);
        Sealed {
            key_id: key.id.clone(),
            bytes,
        }
    }

    /// Opens a sealed value with whichever configured key sealed it.
    pub fn open(&self, sealed: &Sealed, context: &[u8]) -> Result<Zeroizing<Vec<u8>>, OpenError> {
        let key = self
            .keys
            .iter()
            .find(|k| k.id == sealed.key_id)
            .ok_or_else(|| OpenError::UnknownKey(sealed.key_id.clone()))?;
        if sealed.bytes.len() < NONCE_LEN {
            return Err(OpenError::Corrupt(key.id.clone()));
        }
        let (nonce, ciphertext) = sealed.bytes.split_at(NONCE_LEN);
        key.aead
            .decrypt(
                <&XNonce>::try_from(nonce).map_err(|_| OpenError::Corrupt(key.id.clone()))?,
                Payload {
                    msg: ciphertext,
                    aad: context,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| OpenError::Corrupt(key.id.clone()))
    }

    /// Signs `payload` with the current key: `base64url(payload).base64url(tag)`.
    pub fn sign(&self, payload: &[u8]) -> String {
        let tag = mac(&self.keys[0].mac_key, payload);
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(payload),
            URL_SAFE_NO_PAD.encode(tag)
        )
    }

    /// Verifies a value made by [`Keyring::sign`] under any configured key and returns the
    /// payload. `None` for anything tampered, truncated or foreign.
    pub fn verify(&self, signed: &str) -> Option<Vec<u8>> {
        let (payload, tag) = signed.split_once('.')?;
        let payload = URL_SAFE_NO_PAD.decode(payload).ok()?;
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        self.keys.iter().find_map(|key| {
            let mut check = <Hmac<Sha256> as KeyInit>::new_from_slice(&key.mac_key[..]).ok()?;
            check.update(&payload);
            check.verify_slice(&tag).ok().map(|()| payload.clone())
        })
    }
}

fn mac(key: &[u8; 32], payload: &[u8]) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("any key length");
    mac.update(payload);
    mac.finalize().into_bytes().into()
}

fn read_key_file(path: &Path) -> Result<SealingKey, KeyringError> {
    let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|source| {
        KeyringError::Unreadable {
            path: path.to_owned(),
            source,
        }
    })?);
    let malformed = || KeyringError::Malformed {
        path: path.to_owned(),
    };
    let bytes = Zeroizing::new(STANDARD.decode(text.trim()).map_err(|_| malformed())?);
    let key: [u8; 32] = bytes.as_slice().try_into().map_err(|_| malformed())?;
    let key = Zeroizing::new(key);
    Ok(SealingKey::from_bytes(&key))
}

/// A random, URL-safe secret of 32 bytes (OAuth state values, nonces).
pub fn random_token() -> String {
    let bytes: [u8; 32] = rand::random();
    URL_SAFE_NO_PAD.encode(bytes)
}

/// SHA-256 of a value, for storing lookups of secrets without the secrets.
pub fn digest(value: &[u8]) -> Vec<u8> {
    Sha256::digest(value).to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_in_their_context() {
        let ring = Keyring::from_keys(&[[7; 32]]);
        let sealed = ring.seal(b"refresh-token", b"grant-1");
        assert!(!sealed.bytes.windows(7).any(|w| w == b"refresh"));
        assert_eq!(
            &ring.open(&sealed, b"grant-1").unwrap()[..],
            b"refresh-token"
        );
        assert!(matches!(
            ring.open(&sealed, b"grant-2"),
            Err(OpenError::Corrupt(_))
        ));
    }

    #[test]
    fn rotated_keyring_opens_values_sealed_under_the_previous_key() {
        let old = Keyring::from_keys(&[[1; 32]]);
        let sealed = old.seal(b"secret", b"ctx");
        let rotated = Keyring::from_keys(&[[2; 32], [1; 32]]);
        assert_eq!(&rotated.open(&sealed, b"ctx").unwrap()[..], b"secret");
        assert_ne!(rotated.current_key_id(), sealed.key_id);
        let unrelated = Keyring::from_keys(&[[3; 32]]);
        assert!(matches!(
            unrelated.open(&sealed, b"ctx"),
            Err(OpenError::UnknownKey(_))
        ));
    }

    #[test]
    fn signatures_reject_tampering() {
        let ring = Keyring::from_keys(&[[9; 32]]);
        let signed = ring.sign(b"{\"label\":\"a\"}");
        assert_eq!(
            ring.verify(&signed).as_deref(),
            Some(&b"{\"label\":\"a\"}"[..])
        );
        let (_, tag) = signed.split_once('.').unwrap();
        let forged = format!("{}.{tag}", URL_SAFE_NO_PAD.encode(b"{\"label\":\"b\"}"));
        assert!(ring.verify(&forged).is_none());
        assert!(ring.verify("garbage").is_none());
    }
}
