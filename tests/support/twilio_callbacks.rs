//! Twilio status callbacks as Twilio sends them: form-encoded, signed with `X-Twilio-Signature` over the
//! gateway's public URL.

use super::TestApp;
use reclaim_common::auth::twilio::compute_signature;
use reclaim_common::settings::Settings;
use reclaim_common::Secret;

pub const PUBLIC_URL: &str = "https://gateway.example.test";
pub const AUTH_TOKEN: &str = "twilio-test-auth-token";
/// Where Twilio posts status callbacks.
pub const STATUS_PATH: &str = "/providers/twilio/status";

/// The gateway's public URL and Twilio auth token, so callbacks signed by [`sign`] are accepted.
pub fn signed_callbacks(settings: &mut Settings) {
    settings.gateway.public_url = PUBLIC_URL.into();
    settings.gateway.twilio.auth_token = Secret::new(AUTH_TOKEN);
}

pub fn form(params: &[(&str, &str)]) -> Vec<(String, String)> {
    params
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Twilio's signature over our public URL with `path` (and its query) and the form.
pub fn sign_at(path: &str, params: &[(String, String)]) -> String {
    compute_signature(
        &Secret::new(AUTH_TOKEN),
        &format!("{PUBLIC_URL}{path}"),
        params,
    )
}

/// Twilio's signature for a callback to [`STATUS_PATH`].
pub fn sign(params: &[(String, String)]) -> String {
    sign_at(STATUS_PATH, params)
}

/// Posts a callback to `path` (with its query), with the signature header when given.
pub async fn callback_at(
    app: &TestApp,
    path: &str,
    params: &[(String, String)],
    signature: Option<String>,
) -> reqwest::Response {
    let mut request = app.client.post(app.gateway_url(path)).form(params);
    if let Some(signature) = signature {
        request = request.header("X-Twilio-Signature", signature);
    }
    request.send().await.expect("request")
}

/// Posts a callback to [`STATUS_PATH`].
pub async fn callback(
    app: &TestApp,
    params: &[(String, String)],
    signature: Option<String>,
) -> reqwest::Response {
    callback_at(app, STATUS_PATH, params, signature).await
}
