//! Standard Webhooks (`webhook-id`, `webhook-timestamp`, `webhook-signature`), the scheme Supabase Auth signs
//! its hooks with: `v1,<base64 HMAC-SHA256>` over `<id>.<timestamp>.<raw body>`, keyed with the
//! base64-decoded secret after `whsec_`.
//!
//! Several secrets may be configured (rotation) and a header may carry several signatures. The spec separates
//! them with a space; Supabase joins them with `", "`, so entries are split on whitespace and a trailing comma
//! is dropped. Only `v1` entries are checked; others (`v1a`, `v2`) are skipped. Timestamps more than the
//! tolerance away from now, in the past or the future, are refused before any signature is computed.

use super::AuthError;
use crate::secret::{constant_time_eq, Secret};
use actix_web::http::header::HeaderMap;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The reference libraries' tolerance: 5 minutes either way.
pub const DEFAULT_TOLERANCE_SECONDS: i64 = 300;

const ID_HEADER: &str = "webhook-id";
const TIMESTAMP_HEADER: &str = "webhook-timestamp";
const SIGNATURE_HEADER: &str = "webhook-signature";

/// Secrets are accepted with or without their base64 padding, as the reference libraries accept them.
const LENIENT_BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// Why a signed request was refused. The texts name what is wrong and never carry a secret or a signature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("header {0} is missing")]
    MissingHeader(&'static str),
    #[error("header webhook-timestamp is not a number of seconds")]
    BadTimestamp,
    #[error("header webhook-timestamp is outside the tolerance")]
    Stale,
    #[error("no signature in webhook-signature matches a configured secret")]
    NoMatchingSignature,
    #[error("no secret is configured")]
    NoSecret,
}

impl From<SignatureError> for AuthError {
    fn from(error: SignatureError) -> Self {
        match error {
            SignatureError::MissingHeader(_) => AuthError::Missing,
            SignatureError::Stale => AuthError::Stale,
            SignatureError::BadTimestamp
            | SignatureError::NoMatchingSignature
            | SignatureError::NoSecret => AuthError::Wrong,
        }
    }
}

/// A configured secret that is not `[v1,]whsec_<base64>` with a non-empty key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected v1,whsec_<base64> (the whsec_ part as Supabase shows it), got something else")]
pub struct SecretFormatError;

/// One HMAC key, decoded from its `v1,whsec_…` form.
#[derive(Clone)]
pub struct SigningKey(Vec<u8>);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(***)")
    }
}

impl SigningKey {
    /// Accepts `v1,whsec_<base64>` (Supabase's `GOTRUE_HOOK_*_SECRETS` entries), `whsec_<base64>` and bare
    /// base64, padded or not.
    pub fn parse(secret: &str) -> Result<Self, SecretFormatError> {
        let trimmed = secret.trim();
        let without_version = trimmed.strip_prefix("v1,").unwrap_or(trimmed);
        let encoded = without_version
            .strip_prefix("whsec_")
            .unwrap_or(without_version);
        let key = LENIENT_BASE64
            .decode(encoded)
            .map_err(|_| SecretFormatError)?;
        if key.is_empty() {
            return Err(SecretFormatError);
        }
        Ok(Self(key))
    }

    /// The `v1,<base64>` signature of one message.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        format!(
            "v1,{}",
            base64::engine::general_purpose::STANDARD.encode(self.mac(id, timestamp, body))
        )
    }

    fn mac(&self, id: &str, timestamp: i64, body: &[u8]) -> Vec<u8> {
        // HMAC accepts keys of any length; the error branch cannot happen but is not unwrapped.
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.0) else {
            return Vec::new();
        };
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac.finalize().into_bytes().to_vec()
    }
}

/// Parses every configured secret; the error carries the index of the first bad one.
pub fn parse_secrets(secrets: &[Secret]) -> Result<Vec<SigningKey>, (usize, SecretFormatError)> {
    secrets
        .iter()
        .enumerate()
        .map(|(i, s)| SigningKey::parse(s.expose()).map_err(|e| (i, e)))
        .collect()
}

/// Verifies requests signed with any of its keys.
#[derive(Clone, Debug)]
pub struct Verifier {
    keys: Vec<SigningKey>,
    tolerance_seconds: i64,
}

impl Verifier {
    pub fn new(keys: Vec<SigningKey>, tolerance_seconds: i64) -> Self {
        Self {
            keys,
            tolerance_seconds,
        }
    }

    /// Checks the three headers against the raw body at `now` (unix seconds).
    pub fn verify(&self, headers: &HeaderMap, body: &[u8], now: i64) -> Result<(), SignatureError> {
        let header = |name: &'static str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .ok_or(SignatureError::MissingHeader(name))
        };
        let id = header(ID_HEADER)?;
        let timestamp = header(TIMESTAMP_HEADER)?;
        let signatures = header(SIGNATURE_HEADER)?;
        self.verify_parts(id, timestamp, signatures, body, now)
    }

    /// [`Verifier::verify`] on the header values themselves.
    pub fn verify_parts(
        &self,
        id: &str,
        timestamp: &str,
        signatures: &str,
        body: &[u8],
        now: i64,
    ) -> Result<(), SignatureError> {
        if self.keys.is_empty() {
            return Err(SignatureError::NoSecret);
        }
        if timestamp.is_empty() || !timestamp.bytes().all(|b| b.is_ascii_digit()) {
            return Err(SignatureError::BadTimestamp);
        }
        let timestamp: i64 = timestamp
            .parse()
            .map_err(|_| SignatureError::BadTimestamp)?;
        if (now - timestamp).abs() > self.tolerance_seconds {
            return Err(SignatureError::Stale);
        }
        let presented: Vec<&str> = signatures
            .split_whitespace()
            .map(|entry| entry.trim_end_matches(','))
            .filter_map(|entry| entry.strip_prefix("v1,"))
            .collect();
        let mut found = false;
        for key in &self.keys {
            let expected =
                base64::engine::general_purpose::STANDARD.encode(key.mac(id, timestamp, body));
            for candidate in &presented {
                found |= constant_time_eq(expected.as_bytes(), candidate.as_bytes());
            }
        }
        if found {
            Ok(())
        } else {
            Err(SignatureError::NoMatchingSignature)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn vectors() -> Value {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../shared/contracts/standard-webhooks/test-vectors.json"
        );
        let text = std::fs::read_to_string(path).expect("test vectors readable");
        serde_json::from_str(&text).expect("test vectors are JSON")
    }

    fn s<'a>(v: &'a Value, key: &str) -> &'a str {
        v[key].as_str().unwrap_or_else(|| panic!("{key} in {v}"))
    }

    fn verifier(secret: &str) -> Verifier {
        Verifier::new(
            vec![SigningKey::parse(secret).expect("vector secret parses")],
            DEFAULT_TOLERANCE_SECONDS,
        )
    }

    #[test]
    fn the_reference_sign_vectors_are_reproduced_and_verified() {
        let vectors = vectors();
        let signs = vectors["sign_vectors"].as_array().expect("sign vectors");
        assert_eq!(signs.len(), 2);
        for v in signs {
            let key = SigningKey::parse(s(v, "secret")).expect("secret");
            let ts = v["timestamp"].as_i64().expect("timestamp");
            let body = s(v, "payload").as_bytes();
            assert_eq!(
                key.sign(s(v, "msg_id"), ts, body),
                s(v, "expected_signature")
            );
            let verifier = verifier(s(v, "secret"));
            assert_eq!(
                verifier.verify_parts(
                    s(v, "msg_id"),
                    &ts.to_string(),
                    s(v, "expected_signature"),
                    body,
                    ts
                ),
                Ok(())
            );
            // A tampered body, id or timestamp no longer matches.
            let mut tampered = body.to_vec();
            tampered.push(b' ');
            assert_eq!(
                verifier.verify_parts(
                    s(v, "msg_id"),
                    &ts.to_string(),
                    s(v, "expected_signature"),
                    &tampered,
                    ts
                ),
                Err(SignatureError::NoMatchingSignature)
            );
            assert_eq!(
                verifier.verify_parts(
                    "msg_other",
                    &ts.to_string(),
                    s(v, "expected_signature"),
                    body,
                    ts
                ),
                Err(SignatureError::NoMatchingSignature)
            );
            assert_eq!(
                verifier.verify_parts(
                    s(v, "msg_id"),
                    &(ts + 1).to_string(),
                    s(v, "expected_signature"),
                    body,
                    ts
                ),
                Err(SignatureError::NoMatchingSignature)
            );
        }
    }

    #[test]
    fn the_reference_invalid_signatures_are_refused() {
        let vectors = vectors();
        let now = 1_700_000_000;
        let invalid = vectors["invalid_signatures"].as_array().expect("invalid");
        assert_eq!(invalid.len(), 5);
        // Entries without their own inputs use the first sign vector's.
        let base = &vectors["sign_vectors"][0];
        for v in invalid {
            let secret = v["secret"].as_str().unwrap_or(s(base, "secret"));
            let id = v["msg_id"].as_str().unwrap_or(s(base, "msg_id"));
            let payload = v["payload"].as_str().unwrap_or(s(base, "payload"));
            let verifier = verifier(secret);
            // The entry's signature is wrong for the current time...
            assert_eq!(
                verifier.verify_parts(
                    id,
                    &now.to_string(),
                    s(v, "signature_header"),
                    payload.as_bytes(),
                    now
                ),
                Err(SignatureError::NoMatchingSignature),
                "{}",
                s(v, "name")
            );
            // ...while a fresh signature with the same secret passes: the refusal is the signature's.
            let fresh =
                SigningKey::parse(secret)
                    .expect("secret")
                    .sign(id, now, payload.as_bytes());
            assert_eq!(
                verifier.verify_parts(id, &now.to_string(), &fresh, payload.as_bytes(), now),
                Ok(())
            );
        }
    }

    #[test]
    fn the_reference_multi_signature_headers_are_judged_as_the_libraries_judge_them() {
        let vectors = vectors();
        let now = 1_700_000_000;
        let multi = vectors["multi_signature_headers"]
            .as_array()
            .expect("multi");
        assert!(multi.len() >= 3);
        for v in multi {
            let secret = s(v, "secret");
            let id = s(v, "msg_id");
            let payload = s(v, "payload").as_bytes();
            let fresh = SigningKey::parse(secret)
                .expect("secret")
                .sign(id, now, payload);
            let header = match v["entries"].as_array() {
                Some(entries) => entries
                    .iter()
                    .map(|e| {
                        let e = e.as_str().expect("entry");
                        if e.starts_with('<') {
                            fresh.clone()
                        } else {
                            e.to_string()
                        }
                    })
                    .collect::<Vec<_>>(),
                None => vec![s(v, "header").to_string()],
            };
            let expected = match s(v, "expect") {
                "valid" => Ok(()),
                _ => Err(SignatureError::NoMatchingSignature),
            };
            let verifier = verifier(secret);
            // The spec's single space and Supabase's ", " both work.
            for separator in [" ", ", "] {
                assert_eq!(
                    verifier.verify_parts(
                        id,
                        &now.to_string(),
                        &header.join(separator),
                        payload,
                        now
                    ),
                    expected,
                    "{} joined with {separator:?}",
                    s(v, "name")
                );
            }
        }
    }

    #[test]
    fn secrets_are_accepted_with_or_without_padding_and_prefixes() {
        let vectors = vectors();
        let cases = vectors["secret_encoding_cases"].as_array().expect("cases");
        let unpadded = cases[0]["unpadded_secrets"].as_array().expect("unpadded");
        for case in unpadded {
            let a = SigningKey::parse(s(case, "secret")).expect("unpadded");
            let b = SigningKey::parse(s(case, "padded_equivalent")).expect("padded");
            let c =
                SigningKey::parse(&format!("v1,whsec_{}", s(case, "secret"))).expect("prefixed");
            assert_eq!(a.sign("id", 1, b"x"), b.sign("id", 1, b"x"));
            assert_eq!(a.sign("id", 1, b"x"), c.sign("id", 1, b"x"));
        }
        for rejected in cases[1]["rejected_secrets"].as_array().expect("rejected") {
            let rejected = rejected.as_str().expect("secret");
            assert_eq!(SigningKey::parse(rejected).err(), Some(SecretFormatError));
        }
        assert!(SigningKey::parse("v1,whsec_not base64!").is_err());
    }

    #[test]
    fn timestamps_outside_five_minutes_either_way_are_stale_and_malformed_ones_refused() {
        let key = SigningKey::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").expect("secret");
        let verifier = Verifier::new(vec![key.clone()], DEFAULT_TOLERANCE_SECONDS);
        let now = 1_700_000_000;
        for (ts, expected) in [
            (now - 300, Ok(())),
            (now + 300, Ok(())),
            (now - 301, Err(SignatureError::Stale)),
            (now + 301, Err(SignatureError::Stale)),
        ] {
            let signature = key.sign("msg", ts, b"{}");
            assert_eq!(
                verifier.verify_parts("msg", &ts.to_string(), &signature, b"{}", now),
                expected
            );
        }
        for v in vectors()["invalid_timestamps_for_signing"]
            .as_array()
            .expect("timestamps")
        {
            assert_eq!(
                verifier.verify_parts("msg", s(v, "timestamp"), "v1,x", b"{}", now),
                Err(SignatureError::BadTimestamp)
            );
        }
    }

    #[test]
    fn any_configured_secret_verifies_and_none_refuses_everything() {
        let old = SigningKey::parse("v1,whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").expect("old");
        let new = SigningKey::parse("v1,whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD").expect("new");
        let both = Verifier::new(vec![old.clone(), new.clone()], DEFAULT_TOLERANCE_SECONDS);
        let now = 1_700_000_000;
        let ts = now.to_string();
        assert_eq!(
            both.verify_parts("m", &ts, &new.sign("m", now, b"b"), b"b", now),
            Ok(())
        );
        let none = Verifier::new(Vec::new(), DEFAULT_TOLERANCE_SECONDS);
        assert_eq!(
            none.verify_parts("m", &ts, &new.sign("m", now, b"b"), b"b", now),
            Err(SignatureError::NoSecret)
        );
        // Supabase with two secrets: both signatures, joined with ", ".
        let only_old = Verifier::new(vec![old.clone()], DEFAULT_TOLERANCE_SECONDS);
        let header = format!("{}, {}", new.sign("m", now, b"b"), old.sign("m", now, b"b"));
        assert_eq!(only_old.verify_parts("m", &ts, &header, b"b", now), Ok(()));
    }

    #[test]
    fn missing_headers_are_named() {
        let key = SigningKey::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").expect("secret");
        let verifier = Verifier::new(vec![key], DEFAULT_TOLERANCE_SECONDS);
        let mut headers = HeaderMap::new();
        assert_eq!(
            verifier.verify(&headers, b"{}", 0),
            Err(SignatureError::MissingHeader("webhook-id"))
        );
        headers.insert(
            actix_web::http::header::HeaderName::from_static("webhook-id"),
            actix_web::http::header::HeaderValue::from_static("m"),
        );
        headers.insert(
            actix_web::http::header::HeaderName::from_static("webhook-timestamp"),
            actix_web::http::header::HeaderValue::from_static("0"),
        );
        assert_eq!(
            verifier.verify(&headers, b"{}", 0),
            Err(SignatureError::MissingHeader("webhook-signature"))
        );
        assert_eq!(
            AuthError::from(SignatureError::MissingHeader("webhook-id")),
            AuthError::Missing
        );
    }
}
