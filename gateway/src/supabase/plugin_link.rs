//! Telling the plugin about a password change Supabase reports (`password_changed_notification`): a
//! `POST <plugin_url>/v1/identities/<user.id>/password/changed` with `Idempotency-Key:
//! supabase:<metadata.uuid>` (constant across Supabase's retries), so the plugin restarts the password's
//! clock exactly once. Set by `gateway.supabase.plugin_url`, or by `reclaim serve all` linking the plugin it
//! runs ([`crate::Application::link_plugin`]).

use super::payload::SendEmailInput;
use reclaim_common::Secret;
use serde_json::{json, Map, Value};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// How long the gateway waits for the plugin: well inside Supabase's 5 s hook timeout.
const TIMEOUT: Duration = Duration::from_secs(3);

/// Where the plugin is and how to authenticate to it.
#[derive(Debug, Clone)]
pub struct PluginLink {
    /// Base URL, without a trailing `/`.
    pub url: String,
    pub token: Secret,
}

/// The link, set once: from settings when the gateway is built, or by `serve all` before it serves.
#[derive(Debug, Clone)]
pub struct PluginReporter {
    link: Arc<OnceLock<PluginLink>>,
    http: reqwest::Client,
}

/// How a report ended.
#[derive(Debug)]
pub enum ReportOutcome {
    /// No link configured: nothing to tell.
    Off,
    /// The plugin answered 2xx.
    Reported,
    /// Unreachable, timed out or a 5xx: Supabase should retry.
    Unavailable(String),
    /// The plugin refused the report (401/403: `gateway.supabase.plugin_token`; another 4xx: the field it
    /// names): retrying will not help.
    Refused { status: u16, field: String },
}

impl ReportOutcome {
    /// The metrics label.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Reported => "reported",
            Self::Unavailable(_) => "unavailable",
            Self::Refused { .. } => "refused",
        }
    }
}

impl PluginReporter {
    /// A reporter linked to `plugin_url` when it is set, else unlinked until [`PluginReporter::link`].
    pub fn new(plugin_url: &str, token: &Secret) -> anyhow::Result<Self> {
        let link = Arc::new(OnceLock::new());
        if !plugin_url.is_empty() {
            let _ = link.set(PluginLink {
                url: plugin_url.trim_end_matches('/').to_string(),
                token: token.clone(),
            });
        }
        let http = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self { link, http })
    }

    /// Sets the link unless one is set already; false then.
    pub fn link(&self, link: PluginLink) -> bool {
        self.link
            .set(PluginLink {
                url: link.url.trim_end_matches('/').to_string(),
                token: link.token,
            })
            .is_ok()
    }

    /// Reports the change of `input` (a `password_changed_notification`): `changed_at` is `user.updated_at`
    /// (when GoTrue saved the password), else `metadata.time`.
    pub async fn report(&self, input: &SendEmailInput) -> ReportOutcome {
        let Some(link) = self.link.get() else {
            return ReportOutcome::Off;
        };
        let user = &input.user;
        let mut body = Map::new();
        let changed_at = [&user.updated_at, &input.metadata.time]
            .into_iter()
            .map(|t| t.trim())
            .find(|t| !t.is_empty());
        if let Some(at) = changed_at {
            body.insert("changed_at".into(), json!(at));
        }
        if !user.email.trim().is_empty() {
            body.insert("email".into(), json!(user.email.trim()));
        }
        let phone = user.phone.trim();
        if !phone.is_empty() {
            let phone = if phone.starts_with('+') {
                phone.to_string()
            } else {
                format!("+{phone}")
            };
            body.insert("phone".into(), json!(phone));
        }
        let mut url = match reqwest::Url::parse(&format!("{}/", link.url)) {
            Ok(url) => url,
            Err(e) => return ReportOutcome::Unavailable(format!("plugin_url: {e}")),
        };
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.pop_if_empty().extend([
                "v1",
                "identities",
                user.id.trim(),
                "password",
                "changed",
            ]);
        }
        let sent = self
            .http
            .post(url)
            .bearer_auth(link.token.expose())
            .header(
                "Idempotency-Key",
                format!("supabase:{}", input.metadata.uuid.trim()),
            )
            .json(&Value::Object(body))
            .send()
            .await;
        let response = match sent {
            Ok(response) => response,
            Err(e) if e.is_timeout() => return ReportOutcome::Unavailable("timed out".into()),
            Err(e) if e.is_connect() => return ReportOutcome::Unavailable("unreachable".into()),
            Err(e) => return ReportOutcome::Unavailable(e.without_url().to_string()),
        };
        let status = response.status();
        if status.is_success() {
            return ReportOutcome::Reported;
        }
        if status.is_server_error() {
            return ReportOutcome::Unavailable(format!("answered {}", status.as_u16()));
        }
        let field = if matches!(status.as_u16(), 401 | 403) {
            "gateway.supabase.plugin_token".to_string()
        } else {
            response
                .json::<Value>()
                .await
                .ok()
                .and_then(|v| v["error"]["field"].as_str().map(str::to_string))
                .unwrap_or_else(|| "unknown".into())
        };
        ReportOutcome::Refused {
            status: status.as_u16(),
            field,
        }
    }
}
