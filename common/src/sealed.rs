//! Encryption at rest: a keyring of 32-byte keys that seals values with the newest key and opens them with
//! any configured one, so keys can rotate without rewriting the database first.
//!
//! Sealed values are text, `v1:<key id>:<base64(nonce || ciphertext)>`, with XChaCha20-Poly1305 (24-byte
//! random nonces, so random nonces never need a counter). Every value is sealed for a context (the column and
//! the row, e.g. `gateway_messages.data:<message id>`) that is authenticated but not stored: a value copied
//! into another row or column does not open.
//!
//! The same keys also give keyed digests ([`Keyring::digest`]): HMAC-SHA256 under a MAC key derived from each
//! key, for values that are only ever compared (one-time codes) or looked up (rate-limit keys), never read.
//!
//! Configuration: a list of `<key id>:<key>` entries, the key as 64 hex digits or base64 of 32 bytes. The
//! **last** entry is the newest: it seals, all entries open. An empty list means the public development key
//! (logged at start-up, refused in production).

use crate::secret::{constant_time_eq, Secret};
use base64::Engine;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use sha2::Sha256;

const VERSION: &str = "v1";
const NONCE_LEN: usize = 24;
const DIGEST_VERSION: &str = "d1";
/// Separates the MAC keys from the encryption keys: both come from the same configured 32 bytes.
const MAC_KEY_LABEL: &[u8] = b"reclaim keyed digest v1";
/// The key id of the development key, so that values sealed with it are recognisable in a database dump.
pub const DEVELOPMENT_KEY_ID: &str = "dev";

/// One configured key; the key bytes never reach `Debug`.
#[derive(Clone)]
struct Key {
    id: String,
    cipher: XChaCha20Poly1305,
    mac: [u8; 32],
}

impl Key {
    fn new(id: String, bytes: &[u8; 32]) -> Self {
        Self {
            cipher: XChaCha20Poly1305::new(bytes.into()),
            mac: hmac_sha256(bytes, &[MAC_KEY_LABEL]),
            id,
        }
    }

    fn digest(&self, context: &str, value: &[u8]) -> [u8; 32] {
        hmac_sha256(&self.mac, &[context.as_bytes(), &[0], value])
    }
}

fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC takes keys of any length.
    let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(key) else {
        return [0; 32];
    };
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// The keys of one service. Cheap to clone.
#[derive(Clone)]
pub struct Keyring {
    /// Oldest first; the last one seals.
    keys: std::sync::Arc<Vec<Key>>,
    development: bool,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field(
                "key_ids",
                &self.keys.iter().map(|k| k.id.as_str()).collect::<Vec<_>>(),
            )
            .field("development", &self.development)
            .finish()
    }
}

/// Why a configured key entry cannot be used; the message names the entry by position and id, never the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("[{index}]: {message}")]
pub struct KeyError {
    pub index: usize,
    pub message: String,
}

/// Why a sealed value could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error("the value is not sealed (expected v1:<key id>:<data>)")]
    Malformed,
    #[error("no configured key has the id `{0}`")]
    UnknownKey(String),
    #[error("the value does not open with key `{0}` (altered, or sealed for another row)")]
    Rejected(String),
}

impl Keyring {
    /// Parses `<key id>:<key>` entries (the last one is the newest). An empty list is an error here: callers
    /// decide whether the development key may stand in ([`Keyring::development`]).
    pub fn from_entries(entries: &[Secret]) -> Result<Self, Vec<KeyError>> {
        let mut keys = Vec::with_capacity(entries.len());
        let mut problems = Vec::new();
        for (index, entry) in entries.iter().enumerate() {
            match parse_entry(entry.expose()) {
                Ok((id, bytes)) => {
                    if keys.iter().any(|k: &Key| k.id == id) {
                        problems.push(KeyError {
                            index,
                            message: format!("key id `{id}` is listed twice"),
                        });
                        continue;
                    }
                    keys.push(Key::new(id, &bytes));
                }
                Err(message) => problems.push(KeyError { index, message }),
            }
        }
        if entries.is_empty() {
            problems.push(KeyError {
                index: 0,
                message: "at least one key is required".into(),
            });
        }
        if problems.is_empty() {
            Ok(Self {
                keys: std::sync::Arc::new(keys),
                development: false,
            })
        } else {
            Err(problems)
        }
    }

    /// The public development key: anyone can read what it seals. Never for production.
    pub fn development() -> Self {
        let bytes: [u8; 32] = *b"reclaim-development-key-public!!";
        Self {
            keys: std::sync::Arc::new(vec![Key::new(DEVELOPMENT_KEY_ID.into(), &bytes)]),
            development: true,
        }
    }

    /// The configured keys, or the development key when none is configured and `allow_development` holds.
    /// `key` is the configuration key (`gateway.storage.keys`) named in errors and in the warning.
    pub fn from_settings(
        key: &str,
        entries: &[Secret],
        allow_development: bool,
    ) -> anyhow::Result<Self> {
        if entries.is_empty() {
            anyhow::ensure!(allow_development, "{key} is required in production");
            tracing::warn!(
                "{key} is empty: sealing with the public development key; configure a key before storing real data"
            );
            return Ok(Self::development());
        }
        Self::from_entries(entries).map_err(|problems| {
            anyhow::anyhow!(
                "{key}: {}",
                problems
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            )
        })
    }

    pub fn is_development(&self) -> bool {
        self.development
    }

    /// The id of the key that seals new values.
    pub fn newest_id(&self) -> &str {
        self.keys.last().map_or("", |k| k.id.as_str())
    }

    /// Seals `plaintext` for `context` with the newest key.
    pub fn seal(&self, context: &str, plaintext: &[u8]) -> String {
        let Some(key) = self.keys.last() else {
            // Unreachable by construction: both constructors hold at least one key.
            return String::new();
        };
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let sealed = key
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext,
                    aad: context.as_bytes(),
                },
            )
            // Encryption only fails for inputs beyond 256 GiB.
            .unwrap_or_default();
        let mut blob = Vec::with_capacity(NONCE_LEN + sealed.len());
        blob.extend_from_slice(&nonce);
        blob.extend_from_slice(&sealed);
        format!(
            "{VERSION}:{}:{}",
            key.id,
            base64::engine::general_purpose::STANDARD_NO_PAD.encode(blob)
        )
    }

    /// Opens a value sealed for `context` with any configured key.
    pub fn open(&self, context: &str, sealed: &str) -> Result<Vec<u8>, OpenError> {
        let mut parts = sealed.splitn(3, ':');
        let (Some(VERSION), Some(id), Some(data)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(OpenError::Malformed);
        };
        let key = self
            .keys
            .iter()
            .find(|k| constant_time_eq(k.id.as_bytes(), id.as_bytes()))
            .ok_or_else(|| OpenError::UnknownKey(id.to_string()))?;
        let blob = base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(data)
            .map_err(|_| OpenError::Malformed)?;
        if blob.len() < NONCE_LEN {
            return Err(OpenError::Malformed);
        }
        let (nonce, ciphertext) = blob.split_at(NONCE_LEN);
        key.cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| OpenError::Rejected(key.id.clone()))
    }

    /// Like [`Keyring::open`] for text values.
    pub fn open_text(&self, context: &str, sealed: &str) -> Result<String, OpenError> {
        let bytes = self.open(context, sealed)?;
        String::from_utf8(bytes).map_err(|_| OpenError::Rejected(self.id_of(sealed)))
    }

    /// A keyed digest of `value` for `context` under the newest key: `d1:<key id>:<base64 HMAC-SHA256>`.
    /// The same value, context and key always give the same text, so digests can be looked up; without the
    /// key, a digest of a 6-digit code cannot be reversed by trying every code.
    pub fn digest(&self, context: &str, value: &[u8]) -> String {
        let Some(key) = self.keys.last() else {
            return String::new();
        };
        format!(
            "{DIGEST_VERSION}:{}:{}",
            key.id,
            base64::engine::general_purpose::STANDARD_NO_PAD.encode(key.digest(context, value))
        )
    }

    /// Whether `stored` (from [`Keyring::digest`], under any configured key) is the digest of `value` for
    /// `context`. Compared in constant time; a digest under an unknown key matches nothing.
    pub fn digest_matches(&self, context: &str, value: &[u8], stored: &str) -> bool {
        let mut parts = stored.splitn(3, ':');
        let (Some(DIGEST_VERSION), Some(id), Some(data)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return false;
        };
        let Some(key) = self
            .keys
            .iter()
            .find(|k| constant_time_eq(k.id.as_bytes(), id.as_bytes()))
        else {
            return false;
        };
        let Ok(expected) = base64::engine::general_purpose::STANDARD_NO_PAD.decode(data) else {
            return false;
        };
        constant_time_eq(&key.digest(context, value), &expected)
    }

    /// The key id a sealed value names (for logs and rotation reports), or an empty string.
    pub fn id_of(&self, sealed: &str) -> String {
        sealed.split(':').nth(1).unwrap_or_default().to_string()
    }
}

/// `<id>:<64 hex digits | base64 of 32 bytes>` → (id, key bytes).
fn parse_entry(entry: &str) -> Result<(String, [u8; 32]), String> {
    let Some((id, material)) = entry.trim().split_once(':') else {
        return Err(
            "must be `<key id>:<key>` (the key as 64 hex digits or base64 of 32 bytes)".into(),
        );
    };
    let id_ok = (1..=32).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !id_ok {
        return Err("the key id must be 1 to 32 characters of A-Z, a-z, 0-9, `-`, `_`, `.`".into());
    }
    let material = material.trim();
    let decoded = if material.len() == 64 && material.bytes().all(|b| b.is_ascii_hexdigit()) {
        hex::decode(material).ok()
    } else {
        base64::engine::general_purpose::STANDARD
            .decode(material)
            .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(material))
            .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(material))
            .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(material))
            .ok()
    };
    let bytes: [u8; 32] = decoded
        .and_then(|d| <[u8; 32]>::try_from(d).ok())
        .ok_or_else(|| {
            format!("key `{id}` must be 32 bytes, written as 64 hex digits or in base64")
        })?;
    Ok((id.to_string(), bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, byte: u8) -> Secret {
        Secret::new(format!("{id}:{}", hex::encode([byte; 32])))
    }

    #[test]
    fn sealed_values_open_with_the_same_context_only() {
        let ring = Keyring::from_entries(&[entry("k1", 1)]).expect("keyring");
        let sealed = ring.seal("t.c:1", b"123456");
        assert!(sealed.starts_with("v1:k1:"), "{sealed}");
        assert!(!sealed.contains("123456"));
        assert_eq!(ring.open("t.c:1", &sealed), Ok(b"123456".to_vec()));
        assert_eq!(
            ring.open("t.c:2", &sealed),
            Err(OpenError::Rejected("k1".into()))
        );
        assert_ne!(ring.seal("t.c:1", b"123456"), sealed, "nonces are random");
    }

    #[test]
    fn the_last_key_seals_and_every_key_opens() {
        let old = Keyring::from_entries(&[entry("2026-01", 1)]).expect("old");
        let rotated =
            Keyring::from_entries(&[entry("2026-01", 1), entry("2026-06", 2)]).expect("rotated");
        let before = old.seal("c", b"x");
        assert_eq!(rotated.open("c", &before), Ok(b"x".to_vec()));
        let after = rotated.seal("c", b"y");
        assert!(after.starts_with("v1:2026-06:"), "{after}");
        assert_eq!(
            old.open("c", &after),
            Err(OpenError::UnknownKey("2026-06".into()))
        );
    }

    #[test]
    fn key_entries_are_checked_and_named() {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        assert!(Keyring::from_entries(&[Secret::new(format!("b:{b64}"))]).is_ok());
        let errors = Keyring::from_entries(&[
            Secret::new("nocolon"),
            Secret::new("short:abcd"),
            entry("dup", 1),
            entry("dup", 2),
            Secret::new(format!("bad id:{}", hex::encode([0u8; 32]))),
        ])
        .err()
        .unwrap_or_default();
        let indexes: Vec<usize> = errors.iter().map(|e| e.index).collect();
        assert_eq!(indexes, vec![0, 1, 3, 4], "{errors:?}");
        assert!(errors[1].message.contains("key `short` must be 32 bytes"));
        assert!(!format!("{errors:?}").contains(&hex::encode([2u8; 32])));
        assert!(Keyring::from_entries(&[]).is_err());
    }

    #[test]
    fn digests_are_keyed_stable_and_bound_to_their_context() {
        let ring = Keyring::from_entries(&[entry("k1", 1)]).expect("keyring");
        let digest = ring.digest("verification.code:1", b"123456");
        assert!(digest.starts_with("d1:k1:"), "{digest}");
        assert_eq!(digest, ring.digest("verification.code:1", b"123456"));
        assert!(!digest.contains("123456"));
        assert!(ring.digest_matches("verification.code:1", b"123456", &digest));
        assert!(!ring.digest_matches("verification.code:1", b"123457", &digest));
        assert!(!ring.digest_matches("verification.code:2", b"123456", &digest));
        let other = Keyring::from_entries(&[entry("k1", 2)]).expect("other key");
        assert_ne!(other.digest("verification.code:1", b"123456"), digest);
        assert!(!other.digest_matches("verification.code:1", b"123456", &digest));
        let rotated = Keyring::from_entries(&[entry("k1", 1), entry("k2", 3)]).expect("rotated");
        assert!(rotated.digest_matches("verification.code:1", b"123456", &digest));
        assert!(rotated
            .digest("verification.code:1", b"123456")
            .starts_with("d1:k2:"));
        for garbage in ["", "d1", "d1:k1", "d1:k1:!!", "v1:k1:AAAA", "d1:nokey:AAAA"] {
            assert!(!ring.digest_matches("c", b"x", garbage), "{garbage}");
        }
    }

    #[test]
    fn garbage_does_not_open() {
        let ring = Keyring::development();
        assert_eq!(ring.open("c", "123456"), Err(OpenError::Malformed));
        assert_eq!(ring.open("c", "v1:dev:!!"), Err(OpenError::Malformed));
        assert_eq!(
            ring.open("c", "v1:other:AAAA"),
            Err(OpenError::UnknownKey("other".into()))
        );
    }
}
