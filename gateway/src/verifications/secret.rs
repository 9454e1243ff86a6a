//! The secret a verification sends: a numeric code or a link token, drawn from the operating system's CSPRNG.

use super::Kind;
use rand::rngs::OsRng;
use rand::Rng;

const LINK_TOKEN_LENGTH: usize = 32;
const LINK_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// A code (`code_length` digits) or a link token (32 letters and digits). Never logged: `Debug` is redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Why a submitted code cannot be one this verification sent; checked before it counts as a check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretFormatError {
    #[error("must be {0} digits")]
    Code(usize),
    #[error("must be the {LINK_TOKEN_LENGTH}-character token from the link")]
    Link,
}

impl Secret {
    /// A fresh secret of `kind`; each digit or character is uniform (no modulo bias).
    pub fn generate(kind: Kind, code_length: usize) -> Self {
        let mut rng = OsRng;
        let text = match kind {
            Kind::Code => (0..code_length)
                .map(|_| char::from(b'0' + rng.gen_range(0..10u8)))
                .collect(),
            Kind::Link => (0..LINK_TOKEN_LENGTH)
                .map(|_| char::from(LINK_ALPHABET[rng.gen_range(0..LINK_ALPHABET.len())]))
                .collect(),
        };
        Self(text)
    }

    /// A submitted secret, shaped like what `kind` sends.
    pub fn parse(kind: Kind, code_length: usize, text: &str) -> Result<Self, SecretFormatError> {
        let ok = match kind {
            Kind::Code => text.len() == code_length && text.bytes().all(|b| b.is_ascii_digit()),
            Kind::Link => {
                text.len() == LINK_TOKEN_LENGTH && text.bytes().all(|b| b.is_ascii_alphanumeric())
            }
        };
        if ok {
            Ok(Self(text.to_string()))
        } else {
            Err(match kind {
                Kind::Code => SecretFormatError::Code(code_length),
                Kind::Link => SecretFormatError::Link,
            })
        }
    }

    /// A code read back from its sealed copy.
    pub(super) fn from_stored(text: String) -> Self {
        Self(text)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_digits_of_the_configured_length_and_vary() {
        let codes: Vec<Secret> = (0..50).map(|_| Secret::generate(Kind::Code, 6)).collect();
        for code in &codes {
            assert_eq!(code.expose().len(), 6);
            assert!(code.expose().bytes().all(|b| b.is_ascii_digit()));
        }
        let distinct: std::collections::BTreeSet<&str> = codes.iter().map(|c| c.expose()).collect();
        assert!(distinct.len() > 40, "{} distinct of 50", distinct.len());
        assert_eq!(Secret::generate(Kind::Code, 10).expose().len(), 10);
    }

    #[test]
    fn link_tokens_are_32_letters_and_digits() {
        let token = Secret::generate(Kind::Link, 6);
        assert_eq!(token.expose().len(), 32);
        assert!(token.expose().bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_eq!(Secret::parse(Kind::Link, 6, token.expose()), Ok(token));
    }

    #[test]
    fn submitted_secrets_must_have_the_sent_shape() {
        assert!(Secret::parse(Kind::Code, 6, "012345").is_ok());
        for bad in ["12345", "1234567", "12345a", " 12345", "", "١٢٣٤٥٦"] {
            assert_eq!(
                Secret::parse(Kind::Code, 6, bad),
                Err(SecretFormatError::Code(6)),
                "{bad}"
            );
        }
        assert_eq!(
            Secret::parse(Kind::Link, 6, "short"),
            Err(SecretFormatError::Link)
        );
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let code = Secret::generate(Kind::Code, 6);
        assert!(!format!("{code:?}").contains(code.expose()));
    }
}
