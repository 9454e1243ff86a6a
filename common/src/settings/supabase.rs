//! The `[plugin.supabase]` and `[gateway.supabase]` sections: how Supabase Auth's hooks are authenticated
//! (Standard Webhooks secrets, `v1,whsec_<base64>`, as GoTrue's `GOTRUE_HOOK_*_SECRETS` hold them).

use super::Problem;
use crate::auth::standard_webhooks::{
    parse_secrets, SigningKey, Verifier, DEFAULT_TOLERANCE_SECONDS,
};
use crate::secret::Secret;
use serde::{Deserialize, Serialize};

/// `[plugin.supabase]`: the password-verification-attempt hook (`/hooks/supabase/password-verification`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PluginSupabaseSettings {
    /// Accepted Standard Webhooks secrets, `v1,whsec_<base64>` (several, so secrets can be rotated); empty =
    /// every hook call is refused with 401. Secret: also as hook_secrets_file (one per line).
    pub hook_secrets: Vec<Secret>,
    /// The schema id Supabase users get for `[[plugin.policy.select]]` rules (Supabase sends only a user id).
    pub schema_id: String,
    /// A refused login also ends every session of the user (`should_logout_user`).
    pub logout_on_reject: bool,
}

impl Default for PluginSupabaseSettings {
    fn default() -> Self {
        Self {
            hook_secrets: Vec::new(),
            schema_id: "supabase".into(),
            logout_on_reject: false,
        }
    }
}

impl PluginSupabaseSettings {
    /// The verifier of the hook's signatures. Secrets are checked by `validate`; one that does not parse
    /// here is left out, so it verifies nothing.
    pub fn verifier(&self) -> Verifier {
        verifier(&self.hook_secrets)
    }

    pub(crate) fn validate(&self, problems: &mut Vec<Problem>) {
        check_secrets("plugin.supabase.hook_secrets", &self.hook_secrets, problems);
    }
}

/// `[gateway.supabase]`: the send-sms and send-email hooks (`/hooks/supabase/send-sms`, `/send-email`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewaySupabaseSettings {
    /// Accepted Standard Webhooks secrets of both hooks, `v1,whsec_<base64>`; empty = every hook call is
    /// refused with 401. Secret: also as hook_secrets_file (one per line).
    pub hook_secrets: Vec<Secret>,
    /// Emails for `signup`, `invite`, `recovery` and `magiclink` carry a link to Supabase's `/verify` (built
    /// as Supabase documents it from `email_data`: `site_url`, `token_hash`, `email_action_type`,
    /// `redirect_to`) instead of the 6-digit code.
    pub email_links: bool,
    /// The plugin's base URL, e.g. `http://127.0.0.1:4470`: a `password_changed_notification` is first
    /// reported to the plugin (`POST /v1/identities/{id}/password/changed`) so it learns the change time.
    /// Empty: `reclaim serve all` uses the plugin it runs; a gateway on its own reports nothing.
    pub plugin_url: String,
    /// A bearer token the plugin accepts (one of `plugin.api.tokens`). Empty: `serve all` uses the first of
    /// `plugin.api.tokens`. Secret: also as plugin_token_file.
    pub plugin_token: Secret,
}

impl GatewaySupabaseSettings {
    pub fn verifier(&self) -> Verifier {
        verifier(&self.hook_secrets)
    }

    pub(crate) fn validate(&self, problems: &mut Vec<Problem>) {
        check_secrets(
            "gateway.supabase.hook_secrets",
            &self.hook_secrets,
            problems,
        );
        if !self.plugin_url.is_empty() {
            match url::Url::parse(&self.plugin_url) {
                Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {}
                _ => problems.push(Problem::new(
                    "gateway.supabase.plugin_url",
                    "must be an http(s) URL such as http://127.0.0.1:4470",
                )),
            }
            if self.plugin_token.is_empty() {
                problems.push(Problem::new(
                    "gateway.supabase.plugin_token",
                    "is required when gateway.supabase.plugin_url is set",
                ));
            }
        }
    }
}

fn verifier(secrets: &[Secret]) -> Verifier {
    let keys = secrets
        .iter()
        .filter_map(|s| SigningKey::parse(s.expose()).ok())
        .collect();
    Verifier::new(keys, DEFAULT_TOLERANCE_SECONDS)
}

fn check_secrets(key: &str, secrets: &[Secret], problems: &mut Vec<Problem>) {
    if let Err((index, error)) = parse_secrets(secrets) {
        problems.push(Problem::new(key, format!("entry {index}: {error}")));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hook_secrets_must_be_standard_webhooks_secrets() {
        let mut problems = Vec::new();
        let good = PluginSupabaseSettings {
            hook_secrets: vec![Secret::new("v1,whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")],
            ..PluginSupabaseSettings::default()
        };
        good.validate(&mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        let bad = GatewaySupabaseSettings {
            hook_secrets: vec![
                Secret::new("v1,whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
                Secret::new("v1,whsec_"),
            ],
            ..GatewaySupabaseSettings::default()
        };
        bad.validate(&mut problems);
        assert_eq!(problems.len(), 1);
        let text = format!("{problems:?}");
        assert!(text.contains("gateway.supabase.hook_secrets"), "{text}");
        assert!(text.contains("entry 1"), "{text}");
    }

    #[test]
    fn a_plugin_link_needs_an_http_url_and_a_token() {
        let problems_of = |url: &str, token: &str| {
            let mut problems = Vec::new();
            GatewaySupabaseSettings {
                plugin_url: url.into(),
                plugin_token: Secret::new(token),
                ..GatewaySupabaseSettings::default()
            }
            .validate(&mut problems);
            format!("{problems:?}")
        };
        assert_eq!(problems_of("", ""), "[]");
        assert_eq!(problems_of("http://127.0.0.1:4470", "t"), "[]");
        assert!(problems_of("ftp://plugin", "t").contains("gateway.supabase.plugin_url"));
        assert!(problems_of("http://127.0.0.1:4470", "").contains("gateway.supabase.plugin_token"));
    }
}
