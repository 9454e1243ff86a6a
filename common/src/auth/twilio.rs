//! `X-Twilio-Signature`: HMAC-SHA1, keyed with the account auth token, over the full URL Twilio requested
//! followed by every form parameter (names sorted; each name's distinct values sorted) as `name + value`,
//! base64-encoded. Like Twilio's reference validator it accepts the URL with or without its port, and for
//! JSON bodies it checks the `bodySHA256` query parameter against the raw body.

use super::AuthError;
use crate::secret::{constant_time_eq, Secret};
use base64::Engine;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};

/// The signature Twilio would send for `url` and form `params`.
pub fn compute_signature(auth_token: &Secret, url: &str, params: &[(String, String)]) -> String {
    let mut sorted: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (name, value) in params {
        sorted.entry(name).or_default().insert(value);
    }
    let mut mac = Hmac::<Sha1>::new_from_slice(auth_token.expose().as_bytes())
        .expect("HMAC takes keys of any length");
    mac.update(url.as_bytes());
    for (name, values) in sorted {
        for value in values {
            mac.update(name.as_bytes());
            mac.update(value.as_bytes());
        }
    }
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Checks a form-encoded callback: `url` is the public URL the request was sent to, `params` the decoded
/// form body, `signature` the header value.
pub fn verify_form(
    auth_token: &Secret,
    url: &str,
    params: &[(String, String)],
    signature: Option<&str>,
) -> Result<(), AuthError> {
    let signature = signature.ok_or(AuthError::Missing)?;
    if auth_token.is_empty() {
        return Err(AuthError::Wrong);
    }
    let mut ok = false;
    for candidate in url_variants(url) {
        let expected = compute_signature(auth_token, &candidate, params);
        ok |= constant_time_eq(expected.as_bytes(), signature.as_bytes());
    }
    if ok {
        Ok(())
    } else {
        Err(AuthError::Wrong)
    }
}

/// Checks a JSON-bodied request: the signature covers the URL alone, and the URL's `bodySHA256` must be the
/// hex SHA-256 of the raw body.
pub fn verify_json(
    auth_token: &Secret,
    url: &str,
    body: &[u8],
    signature: Option<&str>,
) -> Result<(), AuthError> {
    verify_form(auth_token, url, &[], signature)?;
    let parsed = url::Url::parse(url).map_err(|_| AuthError::Wrong)?;
    let claimed = parsed
        .query_pairs()
        .find(|(k, _)| k == "bodySHA256")
        .map(|(_, v)| v.into_owned())
        .ok_or(AuthError::Wrong)?;
    let actual = hex::encode(Sha256::digest(body));
    if constant_time_eq(actual.as_bytes(), claimed.as_bytes()) {
        Ok(())
    } else {
        Err(AuthError::Wrong)
    }
}

/// The URL as given, and with the default port added or the explicit port removed: proxies in front of the
/// gateway may or may not keep the port Twilio used.
fn url_variants(url: &str) -> Vec<String> {
    let mut variants = vec![url.to_string()];
    if let Ok(mut parsed) = url::Url::parse(url) {
        if parsed.port().is_some() {
            if parsed.set_port(None).is_ok() {
                variants.push(parsed.to_string());
            }
        } else if let Some(default) = parsed.port_or_known_default() {
            // `Url` hides a default port when printing, so splice it in by hand.
            let authority_end = parsed.host_str().map(|h| {
                let prefix = format!("{}://{}", parsed.scheme(), h);
                (prefix.clone(), format!("{prefix}:{default}"))
            });
            if let Some((plain, with_port)) = authority_end {
                if let Some(rest) = url.strip_prefix(&plain) {
                    variants.push(format!("{with_port}{rest}"));
                }
            }
        }
    }
    variants
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn vectors() -> (Secret, Vec<Value>) {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../shared/contracts/twilio/signature-vectors.json"
        );
        let text = std::fs::read_to_string(path).expect("signature vectors in ../shared/contracts");
        let doc: Value = serde_json::from_str(&text).expect("json");
        let token = Secret::new(doc["auth_token"].as_str().expect("auth_token"));
        (token, doc["vectors"].as_array().expect("vectors").clone())
    }

    fn params(vector: &Value) -> Vec<(String, String)> {
        if let Some(map) = vector["params"].as_object() {
            return map
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().expect("string").to_string()))
                .collect();
        }
        if let Some(list) = vector["params_multi"].as_array() {
            return list
                .iter()
                .map(|pair| {
                    (
                        pair[0].as_str().expect("name").to_string(),
                        pair[1].as_str().expect("value").to_string(),
                    )
                })
                .collect();
        }
        Vec::new()
    }

    fn verify(token: &Secret, vector: &Value, signature: &str) -> Result<(), AuthError> {
        let url = vector["url"].as_str().expect("url");
        match vector["body"].as_str() {
            Some(body) => verify_json(token, url, body.as_bytes(), Some(signature)),
            None => verify_form(token, url, &params(vector), Some(signature)),
        }
    }

    #[test]
    fn every_reference_vector_is_accepted_and_every_altered_one_refused() {
        let (token, vectors) = vectors();
        assert!(vectors.len() >= 7);
        for vector in &vectors {
            let name = vector["name"].as_str().unwrap_or("?");
            let signature = vector["expected_signature"].as_str().expect("signature");
            assert_eq!(verify(&token, vector, signature), Ok(()), "{name}");

            let mut altered_signature = signature.to_string();
            altered_signature
                .replace_range(0..1, if signature.starts_with('A') { "B" } else { "A" });
            assert!(
                verify(&token, vector, &altered_signature).is_err(),
                "{name}"
            );

            assert!(
                verify(&Secret::new("54321"), vector, signature).is_err(),
                "{name}: other token"
            );

            let mut altered = vector.clone();
            if let Some(body) = vector["body"].as_str() {
                altered["body"] = Value::String(body.replace("value", "valve"));
            } else if let Some(map) = altered["params"].as_object_mut() {
                map.insert("Digits".into(), Value::String("9999".into()));
            } else if let Some(list) = altered["params_multi"].as_array_mut() {
                list.push(serde_json::json!(["Digits", "0000"]));
            }
            assert!(
                verify(&token, &altered, signature).is_err(),
                "{name}: altered params"
            );
        }
    }

    #[test]
    fn the_urlencoded_form_of_the_duplicate_vector_gives_the_same_signature() {
        let (token, vectors) = vectors();
        let vector = vectors
            .iter()
            .find(|v| v["params_urlencoded"].is_string())
            .expect("urlencoded vector");
        let body = vector["params_urlencoded"].as_str().expect("body");
        let parsed: Vec<(String, String)> = url::form_urlencoded::parse(body.as_bytes())
            .into_owned()
            .collect();
        assert_eq!(
            compute_signature(&token, vector["url"].as_str().expect("url"), &parsed),
            vector["expected_signature"].as_str().expect("sig")
        );
    }

    #[test]
    fn a_missing_signature_or_token_is_refused() {
        let url = "https://example.com/providers/twilio/status";
        assert_eq!(
            verify_form(&Secret::new("t"), url, &[], None),
            Err(AuthError::Missing)
        );
        let signature = compute_signature(&Secret::new(""), url, &[]);
        assert_eq!(
            verify_form(&Secret::default(), url, &[], Some(&signature)),
            Err(AuthError::Wrong)
        );
    }
}
