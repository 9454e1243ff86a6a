//! `reclaim admin`: the support and identity admin calls of both services from a terminal. Tables for people
//! by default, the API's JSON with `--json`; errors say what went wrong (service unreachable, token refused,
//! not found, the API's own message) and exit non-zero.

use clap::{Args, Subcommand, ValueEnum};
use reclaim_common::settings::Settings;
use serde_json::Value;
use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::Duration;

/// How long one admin call may take.
const TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Args)]
pub struct AdminArgs {
    /// The gateway's base URL; default: its `gateway.listen` address from the configuration.
    #[arg(long)]
    gateway: Option<String>,
    /// The plugin's base URL; default: its `plugin.listen` address from the configuration.
    #[arg(long)]
    plugin: Option<String>,
    /// An admin token of the service called (`admin.tokens` or `admin.operators`).
    #[arg(long, env = "RECLAIM_ADMIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Print the API's JSON instead of a table.
    #[arg(long)]
    json: bool,
    #[command(subcommand)]
    command: AdminCommand,
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// Every message and verification to an address (gateway), with attempts, errors in words and limits.
    Timeline {
        /// An email address or an E.164 phone number.
        address: String,
        /// Only what was created since this RFC 3339 time (default: 30 days ago).
        #[arg(long)]
        since: Option<String>,
    },
    /// Queue a failed, undelivered or expired message again (gateway).
    Retry {
        /// The message id.
        id: String,
    },
    /// Lift the per-destination limits (cooldown and window) on an address (gateway).
    Unthrottle {
        /// An email address or an E.164 phone number.
        address: String,
    },
    /// An identity's password state, history size and pending notices (plugin).
    Identity {
        /// The identity id.
        id: String,
    },
    /// Require a password change at the identity's next login (plugin).
    ForceChange {
        /// The identity id.
        id: String,
        #[arg(long, value_enum, default_value_t = Reason::Admin)]
        reason: Reason,
    },
    /// Erase everything the plugin holds for an identity (plugin).
    Erase {
        /// The identity id.
        id: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Reason {
    Admin,
    Compromised,
}

impl Reason {
    fn as_str(self) -> &'static str {
        match self {
            Reason::Admin => "admin",
            Reason::Compromised => "compromised",
        }
    }
}

/// Which service a call goes to.
#[derive(Debug, Clone, Copy)]
enum Service {
    Gateway,
    Plugin,
}

impl Service {
    fn name(self) -> &'static str {
        match self {
            Service::Gateway => "gateway",
            Service::Plugin => "plugin",
        }
    }
}

/// Why a command failed, as the operator reads it.
#[derive(Debug, thiserror::Error)]
enum AdminError {
    #[error("an admin token is required: pass --token or set RECLAIM_ADMIN_TOKEN")]
    NoToken,
    #[error("cannot reach the {service} at {url}: {cause}")]
    Unreachable {
        service: &'static str,
        url: String,
        cause: String,
    },
    #[error("the admin token was refused by the {0}")]
    TokenRefused(&'static str),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("the {service} refused the request ({status}): {message}")]
    Refused {
        service: &'static str,
        status: u16,
        message: String,
    },
    #[error("the {service} failed ({status}): {message}")]
    Failed {
        service: &'static str,
        status: u16,
        message: String,
    },
}

/// Runs `reclaim admin ...`; exit code 0, 1 for a failed call, 2 for a usage problem.
pub fn run(settings: &Settings, args: AdminArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("reclaim admin: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(execute(settings, &args)) {
        Ok(output) => {
            print!("{output}");
            ExitCode::SUCCESS
        }
        Err(error @ AdminError::NoToken) => {
            eprintln!("reclaim admin: {error}");
            ExitCode::from(2)
        }
        Err(error) => {
            eprintln!("reclaim admin: {error}");
            ExitCode::FAILURE
        }
    }
}

/// A base URL from a listen address: a wildcard host is reached on loopback.
fn url_from_listen(listen: &str) -> String {
    let (host, port) = listen.rsplit_once(':').unwrap_or((listen, ""));
    let host = match host {
        "0.0.0.0" | "" => "127.0.0.1",
        "[::]" => "[::1]",
        other => other,
    };
    format!("http://{host}:{port}")
}

/// Percent-encodes one path segment or query value (`+` → `%2B`, `@` → `%40`, ...).
fn encode(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

async fn execute(settings: &Settings, args: &AdminArgs) -> Result<String, AdminError> {
    let token = args
        .token
        .clone()
        .filter(|t| !t.trim().is_empty())
        .ok_or(AdminError::NoToken)?;
    let gateway = args
        .gateway
        .clone()
        .unwrap_or_else(|| url_from_listen(&settings.gateway.listen));
    let plugin = args
        .plugin
        .clone()
        .unwrap_or_else(|| url_from_listen(&settings.plugin.listen));
    let client = Client {
        http: reqwest::Client::builder()
            .timeout(TIMEOUT)
            .build()
            .map_err(|e| AdminError::Failed {
                service: "client",
                status: 0,
                message: e.to_string(),
            })?,
        token,
        gateway: gateway.trim_end_matches('/').to_string(),
        plugin: plugin.trim_end_matches('/').to_string(),
    };
    let (body, table): (Option<Value>, String) = match &args.command {
        AdminCommand::Timeline { address, since } => {
            let mut path = format!("/admin/recipients/{}/timeline", encode(address));
            if let Some(since) = since {
                path.push_str(&format!("?since={}", encode(since)));
            }
            let body = client
                .call(Service::Gateway, reqwest::Method::GET, &path, None)
                .await?;
            let table = timeline_table(&body);
            (Some(body), table)
        }
        AdminCommand::Retry { id } => {
            let path = format!("/admin/messages/{}/retry", encode(id));
            let body = client
                .call(Service::Gateway, reqwest::Method::POST, &path, None)
                .await?;
            let table = format!(
                "message {} queued again (status {}, {} earlier attempts kept)\n",
                text(&body["id"]),
                text(&body["status"]),
                body["history"].as_array().map_or(0, Vec::len)
            );
            (Some(body), table)
        }
        AdminCommand::Unthrottle { address } => {
            let path = format!("/admin/limits?to={}", encode(address));
            client
                .call(Service::Gateway, reqwest::Method::DELETE, &path, None)
                .await?;
            (None, format!("limits on {address} lifted\n"))
        }
        AdminCommand::Identity { id } => {
            let path = format!("/admin/identities/{}", encode(id));
            let body = client
                .call(Service::Plugin, reqwest::Method::GET, &path, None)
                .await?;
            let mut table = state_table(&body["state"]);
            for (label, value) in [
                ("pending notices", &body["pending_notices"]),
                ("email", &body["email"]),
                ("phone", &body["phone"]),
            ] {
                if !value.is_null() {
                    let _ = writeln!(table, "{label:<18} {}", text(value));
                }
            }
            (Some(body), table)
        }
        AdminCommand::ForceChange { id, reason } => {
            let path = format!("/admin/identities/{}/force-change", encode(id));
            let request = serde_json::json!({ "reason": reason.as_str() });
            let body = client
                .call(Service::Plugin, reqwest::Method::POST, &path, Some(request))
                .await?;
            let table = state_table(&body);
            (Some(body), table)
        }
        AdminCommand::Erase { id } => {
            let path = format!("/admin/identities/{}", encode(id));
            client
                .call(Service::Plugin, reqwest::Method::DELETE, &path, None)
                .await?;
            (None, format!("identity {id} erased\n"))
        }
    };
    Ok(if args.json {
        match body {
            Some(body) => format!(
                "{}\n",
                serde_json::to_string_pretty(&body).unwrap_or_default()
            ),
            None => "{}\n".to_string(),
        }
    } else {
        table
    })
}

struct Client {
    http: reqwest::Client,
    token: String,
    gateway: String,
    plugin: String,
}

impl Client {
    /// One admin call; the answer's JSON (null for 204), or why it failed.
    async fn call(
        &self,
        service: Service,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, AdminError> {
        let base = match service {
            Service::Gateway => &self.gateway,
            Service::Plugin => &self.plugin,
        };
        let mut request = self
            .http
            .request(method, format!("{base}{path}"))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.map_err(|e| AdminError::Unreachable {
            service: service.name(),
            url: base.clone(),
            cause: root_cause(&e),
        })?;
        let status = response.status().as_u16();
        let answer: Value = response.json().await.unwrap_or(Value::Null);
        let message = || {
            let error = &answer["error"];
            let mut message = error["message"]
                .as_str()
                .unwrap_or("no message")
                .to_string();
            if let Some(field) = error["field"].as_str() {
                message.push_str(&format!(" (field `{field}`)"));
            }
            message
        };
        match status {
            200..=299 => Ok(answer),
            401 => Err(AdminError::TokenRefused(service.name())),
            404 => Err(AdminError::NotFound(message())),
            400..=499 => Err(AdminError::Refused {
                service: service.name(),
                status,
                message: message(),
            }),
            _ => Err(AdminError::Failed {
                service: service.name(),
                status,
                message: message(),
            }),
        }
    }
}

/// The innermost cause of a failed request, in words: `connection refused`, `timed out`, ...
fn root_cause(error: &reqwest::Error) -> String {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    let mut last = error.to_string();
    while let Some(current) = source {
        if let Some(io) = current.downcast_ref::<std::io::Error>() {
            return match io.kind() {
                std::io::ErrorKind::ConnectionRefused => "connection refused".into(),
                std::io::ErrorKind::TimedOut => "timed out".into(),
                _ => io.to_string(),
            };
        }
        last = current.to_string();
        source = current.source();
    }
    if error.is_timeout() {
        "timed out".into()
    } else {
        last
    }
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn state_table(state: &Value) -> String {
    let mut out = String::new();
    for (label, key) in [
        ("identity", "identity_id"),
        ("profile", "profile"),
        ("changed at", "changed_at"),
        ("expires at", "expires_at"),
        ("days left", "days_left"),
        ("expired", "expired"),
        ("must change", "must_change"),
        ("must change reason", "must_change_reason"),
        ("grace logins used", "grace_logins_used"),
        ("history entries", "history_entries"),
    ] {
        let _ = writeln!(out, "{label:<18} {}", text(&state[key]));
    }
    out
}

fn timeline_table(view: &Value) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "timeline of {} since {}",
        text(&view["address"]),
        text(&view["since"])
    );
    let entries = view["entries"].as_array().cloned().unwrap_or_default();
    if entries.is_empty() {
        let _ = writeln!(out, "no messages or verifications");
    } else {
        let _ = writeln!(
            out,
            "{:<32} {:<12} {:<22} {:<7} {:<18} ID",
            "CREATED", "KIND", "TEMPLATE/PURPOSE", "CHANNEL", "STATUS"
        );
    }
    for entry in &entries {
        let what = if entry["template"].is_string() {
            text(&entry["template"])
        } else {
            text(&entry["purpose"])
        };
        let _ = writeln!(
            out,
            "{:<32} {:<12} {:<22} {:<7} {:<18} {}",
            text(&entry["created_at"]),
            text(&entry["kind"]),
            what,
            text(&entry["channel"]),
            text(&entry["status"]),
            text(&entry["id"])
        );
        if entry["expires_at"].is_string() {
            let _ = writeln!(out, "    expires {}", text(&entry["expires_at"]));
        }
        for attempt in entry["attempts"].as_array().into_iter().flatten() {
            let code = attempt["error_code"]
                .as_str()
                .map(|c| format!(" {c}"))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "    attempt {} at {} {} via {}: {}{} — {}",
                text(&attempt["number"]),
                text(&attempt["started_at"]),
                text(&attempt["channel"]),
                text(&attempt["provider"]),
                text(&attempt["outcome"]),
                code,
                text(&attempt["meaning"])
            );
        }
        for step in entry["fallbacks"].as_array().into_iter().flatten() {
            let taken = if step["taken"] == Value::Bool(true) {
                "taken"
            } else {
                "not taken"
            };
            let _ = writeln!(
                out,
                "    fallback {} to {}: {taken}",
                text(&step["channel"]),
                text(&step["to"])
            );
        }
        if entry["delivered_at"].is_string() {
            let _ = writeln!(out, "    delivered {}", text(&entry["delivered_at"]));
        }
        for send in entry["sends"].as_array().into_iter().flatten() {
            let _ = writeln!(
                out,
                "    send {} at {} by {} (message {})",
                text(&send["number"]),
                text(&send["sent_at"]),
                text(&send["channel"]),
                text(&send["message_id"])
            );
        }
    }
    let refusals = view["limits"]["refusals"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let counted = view["limits"]["counted_sends"]
        .as_array()
        .map_or(0, Vec::len);
    if refusals.is_empty() {
        let _ = writeln!(
            out,
            "limits: a send would be let through ({counted} counted sends)"
        );
    }
    for refusal in refusals {
        let _ = writeln!(
            out,
            "limits: {} refuses sends until {} — {}",
            text(&refusal["limit"]),
            text(&refusal["lifts_at"]),
            text(&refusal["meaning"])
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses_become_urls_and_values_are_encoded() {
        assert_eq!(url_from_listen("0.0.0.0:4471"), "http://127.0.0.1:4471");
        assert_eq!(url_from_listen("10.0.0.5:4470"), "http://10.0.0.5:4470");
        assert_eq!(encode("+14155550100"), "%2B14155550100");
        assert_eq!(encode("jane@example.com"), "jane%40example.com");
        assert_eq!(encode("a b/c"), "a%20b%2Fc");
    }
}
