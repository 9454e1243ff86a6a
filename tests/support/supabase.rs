//! Supabase Auth's side of its hooks: contract payloads sent compact (as Go's encoding/json sends them) and
//! signed the Standard Webhooks way with the verifier's counterpart, `SigningKey::sign`.

use reclaim_common::auth::standard_webhooks::SigningKey;
use serde_json::Value;

/// The hook secret the tests configure, in GoTrue's `v1,whsec_<base64>` form.
pub const HOOK_SECRET: &str = "v1,whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
/// A second configured secret (rotation): Supabase then sends both signatures joined by ", ".
pub const OTHER_SECRET: &str = "v1,whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";

/// A contract file of `shared/contracts/supabase/`.
pub fn contract(name: &str) -> Value {
    let path = format!(
        "{}/../shared/contracts/supabase/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).expect("contract readable");
    serde_json::from_str(&text).expect("contract is JSON")
}

/// How a call is signed.
#[derive(Clone, Copy, Debug)]
pub enum Signing<'a> {
    /// With these secrets at the current time, signatures joined by ", " as Supabase joins them.
    With(&'a [&'a str]),
    /// With these secrets, `seconds` away from now.
    At(&'a [&'a str], i64),
    /// No signature headers at all.
    Unsigned,
}

/// POSTs `body` (raw bytes) to `url` signed as asked; answers the status and the JSON body.
pub async fn send(
    client: &reqwest::Client,
    url: &str,
    body: &[u8],
    signing: Signing<'_>,
) -> (u16, Value) {
    let response = post(client, url, body, signing).await;
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// POSTs `body` (raw bytes) to `url` signed as asked, with a new `webhook-id` each time as Supabase's
/// retries have; answers the whole response.
pub async fn post(
    client: &reqwest::Client,
    url: &str,
    body: &[u8],
    signing: Signing<'_>,
) -> reqwest::Response {
    let id = format!("msg_{}", uuid::Uuid::new_v4().simple());
    let (secrets, offset): (&[&str], i64) = match signing {
        Signing::With(secrets) => (secrets, 0),
        Signing::At(secrets, offset) => (secrets, offset),
        Signing::Unsigned => (&[], 0),
    };
    let timestamp = chrono::Utc::now().timestamp() + offset;
    let mut request = client
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_vec());
    if !matches!(signing, Signing::Unsigned) {
        let signatures: Vec<String> = secrets
            .iter()
            .map(|s| {
                SigningKey::parse(s)
                    .expect("test secret")
                    .sign(&id, timestamp, body)
            })
            .collect();
        request = request
            .header("webhook-id", &id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signatures.join(", "));
    }
    request.send().await.expect("request")
}

/// [`send`] of a JSON value, compact, signed with [`HOOK_SECRET`].
pub async fn send_signed(client: &reqwest::Client, url: &str, body: &Value) -> (u16, Value) {
    let bytes = serde_json::to_vec(body).expect("serialise");
    send(client, url, &bytes, Signing::With(&[HOOK_SECRET])).await
}
