//! Development tokens: on a fresh clone no token list is set, so every API call would be a 401. In
//! `development`, `reclaim serve` fills each empty token list of the services it runs with one random token
//! and prints them once, on stdout (never through the logger). `production` is left as configured.

use super::{Environment, Settings};
use crate::secret::Secret;
use base64::Engine;
use rand::RngCore;

/// Random bytes per token: 24 bytes are 32 URL-safe base64 characters (192 bits).
const TOKEN_BYTES: usize = 24;

/// Which token-protected APIs the process serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServedApis {
    /// The plugin's `/v1` and `/admin`.
    pub plugin: bool,
    /// The gateway's `/v1` and `/admin` (not served by a worker-only gateway).
    pub gateway: bool,
}

/// One token generated for an empty list.
#[derive(Debug, Clone)]
pub struct GeneratedToken {
    /// The configuration key it stands in for, e.g. `plugin.api.tokens`.
    pub key: &'static str,
    /// The shell variable the printed block assigns it to, e.g. `RECLAIM_PLUGIN_TOKEN`.
    pub variable: &'static str,
    pub token: Secret,
}

/// In `development`, puts one fresh random token (OS CSPRNG) into each empty token list of the APIs in
/// `served` and returns them; lists that are set are kept. In `production` nothing changes (empty lists keep
/// refusing every request with 401) and nothing is returned.
pub fn generate_development_tokens(
    settings: &mut Settings,
    served: ServedApis,
) -> Vec<GeneratedToken> {
    if settings.environment != Environment::Development {
        return Vec::new();
    }
    let mut generated = Vec::new();
    // Named operators are admin tokens too: a section that has some needs no generated one.
    let plugin_admin = served.plugin && settings.plugin.admin.operators.is_empty();
    let gateway_admin = served.gateway && settings.gateway.admin.operators.is_empty();
    let lists = [
        (
            served.plugin,
            "plugin.api.tokens",
            "RECLAIM_PLUGIN_TOKEN",
            &mut settings.plugin.api.tokens,
        ),
        (
            plugin_admin,
            "plugin.admin.tokens",
            "RECLAIM_PLUGIN_ADMIN_TOKEN",
            &mut settings.plugin.admin.tokens,
        ),
        (
            served.gateway,
            "gateway.api.tokens",
            "RECLAIM_GATEWAY_TOKEN",
            &mut settings.gateway.api.tokens,
        ),
        (
            gateway_admin,
            "gateway.admin.tokens",
            "RECLAIM_GATEWAY_ADMIN_TOKEN",
            &mut settings.gateway.admin.tokens,
        ),
    ];
    for (serves, key, variable, tokens) in lists {
        if serves && tokens.is_empty() {
            let token = random_token();
            tokens.push(token.clone());
            generated.push(GeneratedToken {
                key,
                variable,
                token,
            });
        }
    }
    generated
}

/// The block `reclaim serve` prints on stdout: a heading, then one `export NAME=token` line per token that
/// a person can paste into a shell. Empty when nothing was generated.
pub fn development_tokens_notice(generated: &[GeneratedToken]) -> String {
    if generated.is_empty() {
        return String::new();
    }
    let mut notice = String::from(
        "==== Development tokens (generated at start-up, not saved; set plugin.api.tokens etc. to choose your own) ====\n",
    );
    for token in generated {
        notice.push_str(&format!(
            "export {}={}  # {}\n",
            token.variable,
            token.token.expose(),
            token.key
        ));
    }
    notice.push_str("==== end of development tokens ====\n");
    notice
}

fn random_token() -> Secret {
    let mut bytes = [0u8; TOKEN_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    Secret::new(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOTH: ServedApis = ServedApis {
        plugin: true,
        gateway: true,
    };

    fn keys(generated: &[GeneratedToken]) -> Vec<&'static str> {
        generated.iter().map(|t| t.key).collect()
    }

    #[test]
    fn development_fills_every_empty_list_with_one_random_url_safe_token() {
        let mut settings = Settings::default();
        assert_eq!(settings.environment, Environment::Development);
        let generated = generate_development_tokens(&mut settings, BOTH);
        assert_eq!(
            keys(&generated),
            [
                "plugin.api.tokens",
                "plugin.admin.tokens",
                "gateway.api.tokens",
                "gateway.admin.tokens"
            ]
        );
        let lists = [
            &settings.plugin.api.tokens,
            &settings.plugin.admin.tokens,
            &settings.gateway.api.tokens,
            &settings.gateway.admin.tokens,
        ];
        for (list, token) in lists.iter().zip(&generated) {
            assert_eq!(list.as_slice(), std::slice::from_ref(&token.token));
            let text = token.token.expose();
            assert_eq!(text.len(), 32, "{}", token.key);
            assert!(
                text.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
                "{}",
                token.key
            );
        }
        let mut distinct: Vec<&str> = generated.iter().map(|t| t.token.expose()).collect();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), 4, "every list gets its own token");
        let again = generate_development_tokens(&mut Settings::default(), BOTH);
        assert_ne!(again[0].token, generated[0].token, "a new token each start");
    }

    #[test]
    fn development_keeps_lists_that_are_set() {
        let mut settings = Settings::default();
        settings.plugin.api.tokens = vec![Secret::new("chosen-plugin-token")];
        settings.gateway.admin.tokens = vec![Secret::new("chosen-admin-token")];
        let generated = generate_development_tokens(&mut settings, BOTH);
        assert_eq!(
            keys(&generated),
            ["plugin.admin.tokens", "gateway.api.tokens"]
        );
        assert_eq!(
            settings.plugin.api.tokens,
            vec![Secret::new("chosen-plugin-token")]
        );
        assert_eq!(
            settings.gateway.admin.tokens,
            vec![Secret::new("chosen-admin-token")]
        );
        assert_eq!(settings.plugin.admin.tokens.len(), 1);
        assert_eq!(settings.gateway.api.tokens.len(), 1);
    }

    #[test]
    fn production_never_generates_and_keeps_empty_lists_empty() {
        let mut settings = Settings {
            environment: Environment::Production,
            ..Settings::default()
        };
        let generated = generate_development_tokens(&mut settings, BOTH);
        assert!(generated.is_empty());
        assert!(settings.plugin.api.tokens.is_empty());
        assert!(settings.plugin.admin.tokens.is_empty());
        assert!(settings.gateway.api.tokens.is_empty());
        assert!(settings.gateway.admin.tokens.is_empty());
        assert_eq!(development_tokens_notice(&generated), "");
    }

    #[test]
    fn only_the_apis_served_get_tokens() {
        let mut settings = Settings::default();
        let gateway_only = ServedApis {
            plugin: false,
            gateway: true,
        };
        let generated = generate_development_tokens(&mut settings, gateway_only);
        assert_eq!(
            keys(&generated),
            ["gateway.api.tokens", "gateway.admin.tokens"]
        );
        assert!(settings.plugin.api.tokens.is_empty());
        let none = ServedApis {
            plugin: false,
            gateway: false,
        };
        assert!(generate_development_tokens(&mut Settings::default(), none).is_empty());
    }

    #[test]
    fn the_notice_holds_one_pasteable_export_line_per_token() {
        let mut settings = Settings::default();
        settings.gateway.admin.tokens = vec![Secret::new("set")];
        let generated = generate_development_tokens(&mut settings, BOTH);
        let notice = development_tokens_notice(&generated);
        let exports: Vec<&str> = notice
            .lines()
            .filter(|l| l.starts_with("export "))
            .collect();
        assert_eq!(exports.len(), 3, "{notice}");
        for (line, token) in exports.iter().zip(&generated) {
            assert_eq!(
                *line,
                format!(
                    "export {}={}  # {}",
                    token.variable,
                    token.token.expose(),
                    token.key
                )
            );
        }
        assert!(notice.starts_with("==== Development tokens (generated at start-up, not saved"));
    }
}
