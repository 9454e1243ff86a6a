//! `ZITADEL-Signature`: how ZITADEL signs Actions v2 target calls and HTTP notification provider calls.
//!
//! Header `t=<unix seconds>,v1=<hex HMAC-SHA256>[,v1=<hex>...]`; the key is the target's (or provider's)
//! signing key used as raw UTF-8 bytes, the message is `"<t>.<raw body>"`. Like ZITADEL's own verifier every
//! `v1` is tried, only timestamps older than the tolerance are refused (a clock ahead of ours is not), and
//! the comparison is constant-time. Several accepted keys let an operator rotate a key: configure the new one
//! next to the old, regenerate it in ZITADEL, then drop the old.

use super::AuthError;
use crate::secret::{constant_time_eq, Secret};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The header name ZITADEL sends (HTTP header names are case-insensitive).
pub const SIGNATURE_HEADER: &str = "zitadel-signature";

/// ZITADEL's default tolerance: a signature older than this is refused as a replay.
pub const DEFAULT_TOLERANCE_SECONDS: i64 = 300;

/// Why a `ZITADEL-Signature` was refused, with ZITADEL's own error names in the docs. Maps onto
/// [`AuthError`] for callers that only need missing / wrong / stale.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// `ErrNotSigned`: no header, or an empty one.
    #[error("no ZITADEL-Signature header")]
    NotSigned,
    /// `ErrInvalidHeader`: a pair without exactly one `=`, or a non-numeric `t`.
    #[error("malformed ZITADEL-Signature header")]
    InvalidHeader,
    /// `ErrNoValidSignature`: no `v1` matches any accepted key.
    #[error("no valid v1 signature")]
    NoValidSignature,
    /// The timestamp is older than the tolerance.
    #[error("signature timestamp too old")]
    TooOld,
}

impl From<SignatureError> for AuthError {
    fn from(error: SignatureError) -> Self {
        match error {
            SignatureError::NotSigned => AuthError::Missing,
            SignatureError::InvalidHeader | SignatureError::NoValidSignature => AuthError::Wrong,
            SignatureError::TooOld => AuthError::Stale,
        }
    }
}

/// Hex HMAC-SHA256 of `"<t>.<body>"` under `key`.
pub fn compute_signature(key: &Secret, timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.expose().as_bytes())
        .expect("HMAC takes keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// The header ZITADEL would send for `body` at `timestamp`, one `v1` per key (tests and the docs use it).
pub fn signature_header(keys: &[Secret], timestamp: i64, body: &[u8]) -> String {
    let mut header = format!("t={timestamp}");
    for key in keys {
        header.push_str(",v1=");
        header.push_str(&compute_signature(key, timestamp, body));
    }
    header
}

/// Verifies `header` over the raw `body` against every accepted key, at `now` (unix seconds), refusing
/// timestamps older than `tolerance_seconds`. No accepted key = every call refused.
pub fn verify(
    header: Option<&str>,
    body: &[u8],
    keys: &[Secret],
    now: i64,
    tolerance_seconds: i64,
) -> Result<(), SignatureError> {
    let header = header
        .filter(|h| !h.is_empty())
        .ok_or(SignatureError::NotSigned)?;
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for pair in header.split(',') {
        let mut parts = pair.split('=');
        let (name, value) = match (parts.next(), parts.next(), parts.next()) {
            (Some(name), Some(value), None) => (name.trim(), value.trim()),
            _ => return Err(SignatureError::InvalidHeader),
        };
        match name {
            "t" => {
                let t: i64 = value.parse().map_err(|_| SignatureError::InvalidHeader)?;
                timestamp = Some(t);
            }
            "v1" => signatures.push(value),
            // Unknown schemes are ignored, as ZITADEL's verifier does, so a future `v2` does not break us.
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::InvalidHeader)?;
    let mut matched = false;
    for key in keys.iter().filter(|k| !k.is_empty()) {
        let expected = compute_signature(key, timestamp, body);
        for presented in &signatures {
            matched |= constant_time_eq(expected.as_bytes(), presented.as_bytes());
        }
    }
    if !matched {
        return Err(SignatureError::NoValidSignature);
    }
    // Checked after the MAC so that a forged header learns nothing about our clock.
    if now.saturating_sub(timestamp) > tolerance_seconds {
        return Err(SignatureError::TooOld);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn cases() -> Value {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../shared/contracts/zitadel/signature-cases.json"
        );
        let text = std::fs::read_to_string(path).expect("signature cases in ../shared/contracts");
        serde_json::from_str(&text).expect("json")
    }

    fn keys(values: &Value) -> Vec<Secret> {
        values
            .as_array()
            .expect("keys")
            .iter()
            .map(|k| Secret::new(k.as_str().expect("key")))
            .collect()
    }

    #[test]
    fn the_computed_vectors_are_reproduced_and_accepted_at_their_time() {
        let doc = cases();
        let vectors = doc["computed_vectors"]["vectors"]
            .as_array()
            .expect("vectors");
        assert_eq!(vectors.len(), 2);
        for vector in vectors {
            let payload = vector["payload"].as_str().expect("payload").as_bytes();
            let keys = keys(&vector["signing_keys"]);
            let t = vector["t"].as_i64().expect("t");
            let header = vector["header"].as_str().expect("header");
            assert_eq!(signature_header(&keys, t, payload), header);
            // Each key alone verifies the header (rotation: the receiver knows only one of them).
            for key in &keys {
                assert_eq!(
                    verify(Some(header), payload, std::slice::from_ref(key), t, 300),
                    Ok(())
                );
            }
            assert_eq!(
                verify(Some(header), b"tesT", &keys, t, 300),
                Err(SignatureError::NoValidSignature)
            );
        }
    }

    #[test]
    fn the_upstream_malformed_headers_fail_as_upstream_says() {
        let doc = cases();
        let upstream = &doc["upstream_cases"];
        let payload = upstream["payload"].as_str().expect("payload").as_bytes();
        let key = vec![Secret::new(upstream["signing_key"].as_str().expect("key"))];
        for case in upstream["malformed_headers"].as_array().expect("cases") {
            let header = case["header"].as_str().expect("header");
            let expected = match case["error"].as_str().expect("error") {
                "ErrNotSigned" => SignatureError::NotSigned,
                "ErrInvalidHeader" => SignatureError::InvalidHeader,
                "ErrNoValidSignature" => SignatureError::NoValidSignature,
                other => panic!("unknown error {other}"),
            };
            assert_eq!(
                verify(Some(header), payload, &key, 12345, 300),
                Err(expected),
                "{header:?}"
            );
        }
        assert_eq!(
            verify(None, payload, &key, 0, 300),
            Err(SignatureError::NotSigned)
        );
    }

    #[test]
    fn a_wrong_key_is_refused_and_rotation_keys_are_tried() {
        let doc = cases();
        let upstream = &doc["upstream_cases"];
        let payload = b"test";
        let now = 1_785_405_600;
        let header = signature_header(&[Secret::new("testSigningKey")], now, payload);
        let wrong = Secret::new(upstream["wrong_key"]["signing_key"].as_str().expect("key"));
        assert_eq!(
            verify(
                Some(&header),
                payload,
                std::slice::from_ref(&wrong),
                now,
                300
            ),
            Err(SignatureError::NoValidSignature)
        );
        assert_eq!(
            verify(
                Some(&header),
                payload,
                &[wrong, Secret::new("testSigningKey")],
                now,
                300
            ),
            Ok(())
        );
        assert_eq!(
            verify(Some(&header), payload, &[], now, 300),
            Err(SignatureError::NoValidSignature)
        );
        assert_eq!(
            verify(Some(&header), payload, &[Secret::default()], now, 300),
            Err(SignatureError::NoValidSignature)
        );
    }

    #[test]
    fn only_old_timestamps_are_refused() {
        let key = vec![Secret::new("k")];
        let t = 1_000_000;
        let header = signature_header(&key, t, b"{}");
        assert_eq!(verify(Some(&header), b"{}", &key, t + 300, 300), Ok(()));
        assert_eq!(
            verify(Some(&header), b"{}", &key, t + 301, 300),
            Err(SignatureError::TooOld)
        );
        // ZITADEL does not refuse a timestamp from the future (its clock may run ahead of ours).
        assert_eq!(verify(Some(&header), b"{}", &key, t - 3600, 300), Ok(()));
        assert_eq!(AuthError::from(SignatureError::TooOld), AuthError::Stale);
    }

    #[test]
    fn a_header_without_a_timestamp_is_malformed() {
        let key = vec![Secret::new("k")];
        let sig = compute_signature(&key[0], 5, b"x");
        assert_eq!(
            verify(Some(&format!("v1={sig}")), b"x", &key, 5, 300),
            Err(SignatureError::InvalidHeader)
        );
    }
}
