//! A stand-in for Ory Kratos: the part of its public API a password user goes through (registration, login,
//! recovery by code, settings, whoami) and the two admin calls Reclaim makes, served over real HTTP on
//! loopback, with identities and sessions in memory.
//!
//! It runs the `after` hooks of a Kratos configuration (our kit by default) at the moments Kratos runs them,
//! renders each body with the real jsonnet from the configured template, and honours the answers as
//! Kratos's `selfservice/hook/web_hook.go` does (see `hooks.rs`). Behaviour follows Kratos at the commit in
//! `../shared/contracts/MANIFEST.md`, including the privileged-session rule of settings: a browser
//! submission on a session older than `privileged_session_max_age` is paused (payload kept in a
//! continuity container for 15 minutes), the user re-authenticates, and a plain `GET` of the submit URL
//! completes it without the password being sent again; API flows are refused with 403
//! `session_refresh_required` instead.
//!
//! Not modelled: CSRF checks (the tokens are in the UI but never enforced), identity schemas other than
//! the quickstart email/password one, verification, MFA, other methods than `password` and `code`.
//!
//! - `hooks.rs`: which hooks run where, and how a web hook is sent and its answer read;
//! - `http.rs`: the endpoints; `client.rs`: what a test calls to drive it as an app would.

pub mod client;
pub mod hooks;
mod http;

pub use client::{Browser, Format, KratosClient, ALL_FORMATS};
pub use hooks::{HookCall, HookConfig};

use chrono::{DateTime, Duration, Utc};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use uuid::Uuid;

/// Kratos's defaults for the lifespans the stand-in models.
const FLOW_LIFESPAN_MINUTES: i64 = 60;
const SESSION_LIFESPAN_HOURS: i64 = 24;
const CONTINUITY_LIFESPAN_MINUTES: i64 = 15;
/// `selfservice.flows.settings.privileged_session_max_age`'s default in Kratos's configuration schema.
const PRIVILEGED_SESSION_MAX_AGE_MINUTES: i64 = 60;

/// A running stand-in. Cheap to clone; all clones share one Kratos.
#[derive(Clone)]
pub struct StandinKratos {
    /// Where the public API listens.
    pub public_url: String,
    /// Where the admin API listens (give this to `plugin.kratos.admin_url`).
    pub admin_url: String,
    inner: Arc<Inner>,
}

struct Inner {
    state: Mutex<State>,
    hooks: Mutex<HookConfig>,
    runner: hooks::Runner,
    /// Added to the wall clock: tests move Kratos's time forward without sleeping.
    offset: Mutex<Duration>,
    /// `serve.public.base_url`: what Kratos puts in URLs it hands out (an edge proxy's address when one
    /// fronts it).
    base_url: Mutex<String>,
    privileged_max_age: Mutex<Duration>,
    /// Kratos's HTTP courier (`courier.delivery_strategy: http`): where recovery emails go, with the API key
    /// header and value; `None` = they stay in `outbox` only.
    courier: Mutex<Option<Courier>>,
}

/// Where the stand-in's courier delivers: URL, API key header, key.
#[derive(Clone)]
pub struct Courier {
    pub url: String,
    pub header: String,
    pub key: String,
}

#[derive(Default)]
struct State {
    identities: HashMap<Uuid, Identity>,
    sessions: Vec<Session>,
    flows: HashMap<Uuid, Flow>,
    /// The last recovery code sent to each address: what the user would read in the email.
    outbox: HashMap<String, String>,
    /// Paused settings submissions by continuity cookie value.
    paused: HashMap<String, Paused>,
}

#[derive(Clone)]
struct Identity {
    /// As Kratos marshals it for hooks and public APIs: no credentials, no admin metadata.
    json: Value,
    password_hash: Option<String>,
    metadata_admin: Value,
}

#[derive(Clone)]
struct Session {
    id: Uuid,
    token: String,
    cookie: String,
    identity_id: Uuid,
    issued_at: DateTime<Utc>,
    authenticated_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    /// `(method, completed_at)`, oldest first.
    methods: Vec<(String, DateTime<Utc>)>,
    active: bool,
    user_agent: String,
    device_id: Uuid,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Registration,
    Login,
    Recovery,
    Settings,
}

impl Kind {
    fn path(self) -> &'static str {
        match self {
            Kind::Registration => "registration",
            Kind::Login => "login",
            Kind::Recovery => "recovery",
            Kind::Settings => "settings",
        }
    }
}

#[derive(Clone)]
struct Flow {
    id: Uuid,
    kind: Kind,
    api: bool,
    issued_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    state: &'static str,
    request_url: String,
    nodes: Vec<Value>,
    messages: Vec<Value>,
    /// Settings: whose flow it is.
    identity_id: Option<Uuid>,
    /// Login: a re-authentication of the current session.
    refresh: bool,
    return_to: Option<String>,
    active: Option<&'static str>,
    /// Recovery: the identity and code of the last code sent.
    recovery: Option<(Uuid, String, DateTime<Utc>)>,
    continue_with: Vec<Value>,
}

/// A settings submission kept while the user re-authenticates (`continuity.Manager.Pause`).
#[derive(Clone)]
struct Paused {
    flow_id: Uuid,
    identity_id: Uuid,
    payload: Value,
    expires_at: DateTime<Utc>,
}

impl StandinKratos {
    /// Starts the public and admin listeners on loopback ports; no hooks until [`Self::use_hooks`].
    pub async fn start() -> Self {
        let public = std::net::TcpListener::bind("127.0.0.1:0").expect("bind public");
        let admin = std::net::TcpListener::bind("127.0.0.1:0").expect("bind admin");
        let public_url = format!("http://{}", public.local_addr().expect("addr"));
        let admin_url = format!("http://{}", admin.local_addr().expect("addr"));
        let inner = Arc::new(Inner {
            state: Mutex::new(State::default()),
            hooks: Mutex::new(HookConfig::default()),
            runner: hooks::Runner::default(),
            offset: Mutex::new(Duration::zero()),
            base_url: Mutex::new(public_url.clone()),
            privileged_max_age: Mutex::new(Duration::minutes(PRIVILEGED_SESSION_MAX_AGE_MINUTES)),
            courier: Mutex::new(None),
        });
        let kratos = Self {
            public_url,
            admin_url,
            inner,
        };
        http::serve(kratos.clone(), public, admin);
        kratos
    }

    /// Runs these hooks from now on.
    pub fn use_hooks(&self, config: HookConfig) {
        *self.inner.hooks.lock().expect("hooks") = config;
    }

    /// Runs our kit's hooks against the test's plugin, with the test key.
    pub fn use_kit(&self, app: &super::TestApp) {
        self.use_hooks(HookConfig::kit(&app.plugin, super::kratos::KRATOS_KEY));
    }

    /// Hands recovery emails to an HTTP courier, as `courier.delivery_strategy: http` does: the body is the
    /// courier template's context (`function(ctx) ctx`), with the API key header.
    pub fn use_courier(&self, courier: Courier) {
        *self.inner.courier.lock().expect("courier") = Some(courier);
    }

    fn courier(&self) -> Option<Courier> {
        self.inner.courier.lock().expect("courier").clone()
    }

    /// The URL Kratos advertises for itself (redirects, `return_to`, `ui.action`): set it to the address of
    /// a proxy in front of the stand-in so that clients come back through it.
    pub fn set_public_base_url(&self, url: &str) {
        *self.inner.base_url.lock().expect("base url") = url.trim_end_matches('/').to_string();
    }

    pub fn set_privileged_session_max_age(&self, max_age: Duration) {
        *self.inner.privileged_max_age.lock().expect("max age") = max_age;
    }

    /// Moves Kratos's clock forward (sessions age, flows and paused submissions expire).
    pub fn advance(&self, by: Duration) {
        *self.inner.offset.lock().expect("offset") += by;
    }

    pub fn now(&self) -> DateTime<Utc> {
        Utc::now() + *self.inner.offset.lock().expect("offset")
    }

    /// The recovery code last emailed to `email`, as the user would read it.
    pub fn recovery_code(&self, email: &str) -> Option<String> {
        self.state().outbox.get(&email.to_lowercase()).cloned()
    }

    /// Waits until every fire-and-forget hook call (`response.ignore: true`) has finished.
    pub async fn settle(&self) {
        self.inner.runner.settle().await;
    }

    /// Every web hook call made so far, in the order they finished.
    pub fn hook_calls(&self) -> Vec<HookCall> {
        self.inner.runner.calls()
    }

    /// The identity as the admin API shows it (with `metadata_admin`), by email.
    pub fn identity_by_email(&self, email: &str) -> Option<Value> {
        let state = self.state();
        state
            .identities
            .values()
            .find(|i| i.email() == email.to_lowercase())
            .map(Identity::admin_json)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.state.lock().expect("stand-in state")
    }

    fn base_url(&self) -> String {
        self.inner.base_url.lock().expect("base url").clone()
    }

    fn hooks(&self, point: hooks::Point) -> Vec<hooks::Hook> {
        self.inner.hooks.lock().expect("hooks").hooks(point)
    }

    /// Where Kratos sends browsers to show a flow (`selfservice.flows.*.ui_url`).
    fn ui_url(&self, kind: Kind, flow: Uuid) -> String {
        format!("http://ui.invalid/{}?flow={flow}", kind.path())
    }

    /// `selfservice.default_browser_return_url`.
    fn default_return_url(&self) -> String {
        "http://ui.invalid/".into()
    }
}

fn timestamp(at: DateTime<Utc>) -> Value {
    Value::String(at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
}

/// A random opaque value (session tokens, cookies).
fn opaque() -> String {
    format!("{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple())
}

impl Identity {
    fn id(&self) -> Uuid {
        self.json["id"]
            .as_str()
            .and_then(|s| Uuid::parse_str(s).ok())
            .unwrap_or_default()
    }

    fn email(&self) -> String {
        self.json["traits"]["email"]
            .as_str()
            .unwrap_or_default()
            .to_lowercase()
    }

    fn admin_json(&self) -> Value {
        let mut json = self.json.clone();
        json["metadata_admin"] = self.metadata_admin.clone();
        json
    }

    /// A new identity before it is stored: the nil id and zero times Kratos's pre-persist hooks see.
    fn unsaved(traits: Value, now: DateTime<Utc>) -> Self {
        let email = traits["email"].as_str().unwrap_or_default().to_string();
        let zero = "0001-01-01T00:00:00Z";
        Self {
            json: json!({
                "id": Uuid::nil().to_string(),
                "schema_id": "default",
                "schema_url": "",
                "state": "active",
                "state_changed_at": timestamp(now),
                "traits": traits,
                "verifiable_addresses": [{
                    "id": Uuid::nil().to_string(), "value": email, "verified": false, "via": "email",
                    "status": "pending", "created_at": zero, "updated_at": zero
                }],
                "recovery_addresses": [{
                    "id": Uuid::nil().to_string(), "value": email, "via": "email",
                    "created_at": zero, "updated_at": zero
                }],
                "metadata_public": null,
                "created_at": zero,
                "updated_at": zero,
                "organization_id": null,
            }),
            password_hash: None,
            metadata_admin: Value::Null,
        }
    }

    /// Gives the identity its id, times and address ids, as storing it does.
    fn persist(&mut self, base_url: &str, now: DateTime<Utc>) {
        let json = &mut self.json;
        json["id"] = Value::String(Uuid::new_v4().to_string());
        json["schema_url"] = Value::String(format!("{base_url}/schemas/ZGVmYXVsdA"));
        json["created_at"] = timestamp(now);
        json["updated_at"] = timestamp(now);
        for list in ["verifiable_addresses", "recovery_addresses"] {
            for address in json[list].as_array_mut().into_iter().flatten() {
                address["id"] = Value::String(Uuid::new_v4().to_string());
                address["created_at"] = timestamp(now);
                address["updated_at"] = timestamp(now);
            }
        }
    }

    /// `parseWebhookResponse`: each non-empty field of a hook's `identity` replaces the identity's whole.
    fn apply_hook_changes(&mut self, changes: &Value) {
        for field in [
            "traits",
            "schema_id",
            "state",
            "verifiable_addresses",
            "recovery_addresses",
            "metadata_public",
        ] {
            let value = &changes[field];
            let empty = match value {
                Value::Null => true,
                Value::String(s) => s.is_empty(),
                Value::Array(a) => a.is_empty(),
                Value::Object(o) => o.is_empty(),
                _ => false,
            };
            if !empty {
                self.json[field] = value.clone();
            }
        }
        if changes["metadata_admin"]
            .as_object()
            .is_some_and(|o| !o.is_empty())
        {
            self.metadata_admin = changes["metadata_admin"].clone();
        }
        if let Some(external) = changes.get("external_id") {
            self.json["external_id"] = external.clone();
        }
    }
}

impl Session {
    fn json(&self, identity: Option<&Identity>, nil_ids: bool) -> Value {
        let id = if nil_ids { Uuid::nil() } else { self.id };
        let mut json = json!({
            "id": id.to_string(),
            "active": self.active,
            "expires_at": timestamp(self.expires_at),
            "authenticated_at": timestamp(self.authenticated_at),
            "authenticator_assurance_level": "aal1",
            "authentication_methods": self.methods.iter().map(|(method, at)| json!({
                "method": method, "aal": "aal1", "completed_at": timestamp(*at)
            })).collect::<Vec<_>>(),
            "issued_at": timestamp(self.issued_at),
            "devices": [{
                "id": if nil_ids { Uuid::nil().to_string() } else { self.device_id.to_string() },
                "ip_address": "127.0.0.1", "location": "", "user_agent": self.user_agent
            }],
        });
        if let Some(identity) = identity {
            json["identity"] = identity.json.clone();
        }
        json
    }
}

/// A UI node in Kratos's shape.
fn node(
    group: &str,
    name: &str,
    kind: &str,
    value: Option<Value>,
    label: Option<(u64, &str)>,
) -> Value {
    let mut attributes =
        json!({"name": name, "type": kind, "disabled": false, "node_type": "input"});
    if let Some(value) = value {
        attributes["value"] = value;
    }
    match (kind, name) {
        ("hidden", "csrf_token") | ("email", _) | ("password", _) => {
            attributes["required"] = Value::Bool(true)
        }
        ("text", "identifier") | ("text", "code") => attributes["required"] = Value::Bool(true),
        _ => {}
    }
    if kind == "password" {
        attributes["autocomplete"] = Value::String(
            if name == "password" && group == "password" {
                "new-password"
            } else {
                "current-password"
            }
            .into(),
        );
    }
    let meta = match label {
        Some((id, text)) => json!({"label": {"id": id, "text": text, "type": "info"}}),
        None => json!({}),
    };
    json!({"type": "input", "group": group, "attributes": attributes, "messages": [], "meta": meta})
}

fn csrf_node() -> Value {
    node(
        "default",
        "csrf_token",
        "hidden",
        Some(Value::String(base64_token())),
        None,
    )
}

fn base64_token() -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .encode([Uuid::new_v4().into_bytes(), Uuid::new_v4().into_bytes()].concat())
}

impl Flow {
    fn new(kind: Kind, api: bool, now: DateTime<Utc>, request_url: String) -> Self {
        let mut flow = Self {
            id: Uuid::new_v4(),
            kind,
            api,
            issued_at: now,
            expires_at: now + Duration::minutes(FLOW_LIFESPAN_MINUTES),
            state: "choose_method",
            request_url,
            nodes: Vec::new(),
            messages: Vec::new(),
            identity_id: None,
            refresh: false,
            return_to: None,
            active: None,
            recovery: None,
            continue_with: Vec::new(),
        };
        flow.nodes = flow.initial_nodes(None);
        if kind == Kind::Settings {
            flow.state = "show_form";
        }
        if kind == Kind::Recovery {
            flow.active = Some("code");
        }
        flow
    }

    /// The form Kratos shows for the flow, with the identity's traits filled in for settings.
    fn initial_nodes(&self, identity: Option<&Identity>) -> Vec<Value> {
        let mut nodes = vec![csrf_node()];
        match self.kind {
            Kind::Registration => {
                nodes.push(node(
                    "default",
                    "traits.email",
                    "email",
                    None,
                    Some((1_070_002, "E-Mail")),
                ));
                nodes.push(node(
                    "password",
                    "password",
                    "password",
                    None,
                    Some((1_070_001, "Password")),
                ));
                nodes.push(node(
                    "password",
                    "method",
                    "submit",
                    Some("password".into()),
                    Some((1_040_001, "Sign up")),
                ));
            }
            Kind::Login => {
                nodes.insert(
                    0,
                    node(
                        "default",
                        "identifier",
                        "text",
                        None,
                        Some((1_070_002, "E-Mail")),
                    ),
                );
                let mut password = node(
                    "password",
                    "password",
                    "password",
                    None,
                    Some((1_070_001, "Password")),
                );
                password["attributes"]["autocomplete"] = "current-password".into();
                nodes.push(password);
                nodes.push(node(
                    "password",
                    "method",
                    "submit",
                    Some("password".into()),
                    Some((1_010_022, "Sign in with password")),
                ));
            }
            Kind::Recovery => {
                nodes.push(node(
                    "code",
                    "email",
                    "email",
                    None,
                    Some((1_070_007, "Email")),
                ));
                nodes.push(node(
                    "code",
                    "method",
                    "submit",
                    Some("code".into()),
                    Some((1_070_005, "Submit")),
                ));
            }
            Kind::Settings => {
                let email = identity.map(|i| i.json["traits"]["email"].clone());
                nodes.push(node(
                    "profile",
                    "traits.email",
                    "email",
                    email,
                    Some((1_070_002, "E-Mail")),
                ));
                nodes.push(node(
                    "profile",
                    "method",
                    "submit",
                    Some("profile".into()),
                    Some((1_070_003, "Save")),
                ));
                nodes.push(node(
                    "password",
                    "password",
                    "password",
                    None,
                    Some((1_070_001, "Password")),
                ));
                nodes.push(node(
                    "password",
                    "method",
                    "submit",
                    Some("password".into()),
                    Some((1_070_003, "Save")),
                ));
            }
        }
        nodes
    }

    fn reset_messages(&mut self) {
        self.messages.clear();
        for node in &mut self.nodes {
            node["messages"] = json!([]);
        }
    }

    /// `Container.AddMessage`: a message for a field goes on its node (a new one when there is none), any
    /// other above the form.
    fn add_message(&mut self, pointer: &str, message: Value) {
        let name = pointer
            .trim_start_matches('#')
            .trim_start_matches('/')
            .replace('/', ".");
        if name.is_empty() {
            self.messages.push(message);
            return;
        }
        if let Some(node) = self
            .nodes
            .iter_mut()
            .find(|n| n["attributes"]["name"] == name.as_str())
        {
            node["messages"]
                .as_array_mut()
                .expect("messages")
                .push(message);
            return;
        }
        let mut new = node("default", &name, "text", None, None);
        new["messages"] = json!([message]);
        self.nodes.push(new);
    }

    fn json(&self, base_url: &str, identity: Option<&Identity>, now: DateTime<Utc>) -> Value {
        let mut ui = json!({
            "action": format!("{base_url}/self-service/{}?flow={}", self.kind.path(), self.id),
            "method": "POST",
            "nodes": self.nodes,
        });
        if !self.messages.is_empty() {
            ui["messages"] = Value::Array(self.messages.clone());
        }
        let mut json = json!({
            "id": self.id.to_string(),
            "type": if self.api { "api" } else { "browser" },
            "expires_at": timestamp(self.expires_at),
            "issued_at": timestamp(self.issued_at),
            "request_url": self.request_url,
            "ui": ui,
            "state": self.state,
            "organization_id": null,
        });
        if let Some(active) = self.active {
            json["active"] = active.into();
        }
        if let Some(return_to) = &self.return_to {
            json["return_to"] = return_to.clone().into();
        }
        if !self.continue_with.is_empty() {
            json["continue_with"] = Value::Array(self.continue_with.clone());
        }
        match self.kind {
            Kind::Login => {
                json["refresh"] = self.refresh.into();
                json["requested_aal"] = "aal1".into();
                json["created_at"] = timestamp(self.issued_at);
                json["updated_at"] = timestamp(now);
            }
            Kind::Settings => {
                if let Some(identity) = identity {
                    json["identity"] = identity.json.clone();
                }
            }
            Kind::Registration | Kind::Recovery => {}
        }
        json
    }
}
