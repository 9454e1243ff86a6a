//! Kratos as our tests see it: the contract payloads from `../shared/contracts/kratos/`, turned into hook
//! bodies by our own jsonnet template with a real jsonnet implementation, and sent like Kratos sends them.

use super::plugin::new_id;
use super::TestApp;
use reclaim_common::settings::{ExpiryMode, OnExpired, ProfileSettings, SelectRule, Settings};
use reclaim_common::Secret;
use serde_json::Value;
use std::io::Write;
use std::process::{Command, Stdio};

pub const KRATOS_KEY: &str = "kratos-test-key";

/// A contract payload (a hook `ctx`) by file name.
pub fn contract(name: &str) -> Value {
    let path = format!("../shared/contracts/kratos/{name}");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).expect("contract is JSON")
}

/// The same payload for another identity: new id, schema, email and times, so tests never share state by
/// accident and nothing depends on the dates frozen in the contract files.
pub fn for_identity(mut ctx: Value, id: &str, schema_id: &str) -> Value {
    let now =
        Value::String(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true));
    for key in ["created_at", "updated_at", "state_changed_at"] {
        if ctx["identity"].get(key).is_some() {
            ctx["identity"][key] = now.clone();
        }
    }
    if ctx.get("session").is_some_and(|s| s.is_object()) {
        ctx["session"]["authenticated_at"] = now.clone();
        ctx["session"]["issued_at"] = now.clone();
    }
    ctx["identity"]["id"] = Value::String(id.to_string());
    ctx["identity"]["schema_id"] = Value::String(schema_id.to_string());
    ctx["identity"]["traits"]["email"] = Value::String(format!("user-{}@example.org", &id[..8]));
    if ctx.get("session").is_some_and(|s| s.is_object()) {
        ctx["session"]["identity"]["id"] = Value::String(id.to_string());
    }
    ctx
}

/// Kratos hooks on with [`KRATOS_KEY`], minimum age one hour on `default`, and a `contractor` profile (schema
/// `contractor`) that expires after 30 days and only warns.
pub fn kratos_settings(settings: &mut Settings) {
    settings.plugin.kratos.api_keys = vec![Secret::new(KRATOS_KEY)];
    let policy = &mut settings.plugin.policy;
    if let Some(default) = policy.profiles.get_mut("default") {
        default.min_age_minutes = 60;
    }
    policy.profiles.insert(
        "contractor".into(),
        ProfileSettings {
            expiry: ExpiryMode::MaxAge,
            max_age_days: 30,
            warn_before_days: 7,
            on_expired: OnExpired::Warn,
            ..ProfileSettings::default()
        },
    );
    policy.select.push(SelectRule {
        profile: "contractor".into(),
        schema_id: "contractor".into(),
        ..SelectRule::default()
    });
}

/// The registration pre-persist payload for `id`, carrying the nil id Kratos sends before the identity is
/// stored.
pub fn pre_persist(id: &str, schema_id: &str) -> Value {
    let mut pre = for_identity(
        contract("webhook-registration-password-pre-persist.json"),
        id,
        schema_id,
    );
    pre["identity"]["id"] = Value::String("00000000-0000-0000-0000-000000000000".into());
    pre
}

/// The post-persist registration hook for `id`, which must let the flow go on.
pub async fn registered(app: &TestApp, id: &str, schema_id: &str) {
    let post = for_identity(
        contract("webhook-registration-password.json"),
        id,
        schema_id,
    );
    call_hook(app, "/hooks/kratos/registration/after", &post, &new_id())
        .await
        .assert_proceeds();
}

/// Marks the payload's session as created by account recovery (as Kratos does for the recovery session).
pub fn from_recovery_session(mut ctx: Value) -> Value {
    ctx["session"]["authentication_methods"] = serde_json::json!([
        {"aal": "aal1", "completed_at": "2026-07-30T09:58:40.501226Z", "method": "code_recovery"}
    ]);
    ctx
}

fn python() -> String {
    let venv = format!(
        "{}/tests/tools/.venv/bin/python",
        env!("CARGO_MANIFEST_DIR")
    );
    assert!(
        std::path::Path::new(&venv).exists(),
        "{venv} is missing: run .ci/tools once to install the test tools"
    );
    venv
}

/// Evaluates `config/kratos/reclaim.jsonnet` on `ctx` with the jsonnet implementation from PyPI.
pub fn render_body(ctx: &Value) -> Value {
    let output = render_template(std::path::Path::new("config/kratos/reclaim.jsonnet"), ctx)
        .unwrap_or_else(|e| panic!("{e}"));
    serde_json::from_slice(&output).expect("jsonnet output is JSON")
}

/// Evaluates a Kratos body template on `ctx` as Kratos does (`ctx` as a top-level argument) and returns the
/// bytes jsonnet printed, which is the body Kratos sends.
pub fn render_template(template: &std::path::Path, ctx: &Value) -> Result<Vec<u8>, String> {
    let mut child = Command::new(python())
        .arg("tests/tools/jsonnet_eval.py")
        .arg(template)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("start jsonnet: {e}"))?;
    child
        .stdin
        .take()
        .ok_or("jsonnet has no stdin")?
        .write_all(ctx.to_string().as_bytes())
        .map_err(|e| format!("write ctx: {e}"))?;
    let output = child
        .wait_with_output()
        .map_err(|e| format!("jsonnet runs: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "jsonnet failed on {}: {}",
            template.display(),
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(output.stdout)
}

/// What a hook call returned.
pub struct HookAnswer {
    pub status: u16,
    pub body: Value,
}

impl HookAnswer {
    /// Kratos goes on with the flow: 200 with a body, or 204.
    pub fn assert_proceeds(&self) {
        assert!(
            self.status == 200 || self.status == 204,
            "{} {}",
            self.status,
            self.body
        );
    }

    /// The ids of the messages of a Kratos interrupt, with where they point.
    pub fn message_ids(&self) -> Vec<(String, u64)> {
        self.body["messages"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|group| {
                let ptr = group["instance_ptr"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                group["messages"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(move |m| (ptr.clone(), m["id"].as_u64().unwrap_or_default()))
            })
            .collect()
    }
}

/// Sends a hook call as Kratos does: rendered body, API key header, a trigger id.
pub async fn call_hook(app: &TestApp, path: &str, ctx: &Value, trigger_id: &str) -> HookAnswer {
    let body = render_body(ctx);
    send_raw(
        app,
        path,
        body.to_string().into_bytes(),
        Some(KRATOS_KEY),
        trigger_id,
    )
    .await
}

/// The settings (password change) hook for `ctx`, with a fresh trigger id.
pub async fn settings_hook(app: &TestApp, ctx: &Value) -> HookAnswer {
    call_hook(app, "/hooks/kratos/settings/password", ctx, &new_id()).await
}

pub async fn send_raw(
    app: &TestApp,
    path: &str,
    body: Vec<u8>,
    key: Option<&str>,
    trigger_id: &str,
) -> HookAnswer {
    let mut request = app
        .client
        .post(app.plugin_url(path))
        .header("content-type", "application/json")
        .header("ory-webhook-trigger-id", trigger_id)
        .header("ory-webhook-request-id", uuid::Uuid::new_v4().to_string())
        .body(body);
    if let Some(key) = key {
        request = request.header("x-reclaim-key", key);
    }
    let response = request.send().await.expect("hook request");
    let status = response.status().as_u16();
    let bytes = response.bytes().await.expect("body");
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into_owned()))
    };
    HookAnswer { status, body }
}

/// A stand-in for Kratos's admin API on loopback, answering with Kratos's own fixture
/// (`admin-identity-with-credentials.json`) for any identity id, with a password hash the test chooses and
/// some existing `metadata_admin`, and
/// recording the JSON Patch bodies it receives.
pub struct KratosAdminStandIn {
    pub url: String,
    pub patches: std::sync::Arc<std::sync::Mutex<Vec<(String, Value)>>>,
}

pub async fn kratos_admin_stand_in(hashed_password: &str) -> KratosAdminStandIn {
    use actix_web::{web, App, HttpResponse, HttpServer};
    let mut fixture = contract("admin-identity-with-credentials.json");
    fixture["credentials"]["password"]["config"]["hashed_password"] =
        Value::String(hashed_password.to_string());
    // Admin metadata some other tool already keeps on the identity; our patch must not lose it.
    fixture["metadata_admin"] = serde_json::json!({"baz": "kept"});
    let patches = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let recorded = patches.clone();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind stand-in");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let server = HttpServer::new(move || {
        let fixture = fixture.clone();
        let recorded = recorded.clone();
        App::new()
            .route(
                "/admin/identities/{id}",
                web::get().to(move |id: web::Path<String>, query: web::Query<std::collections::HashMap<String, String>>| {
                    let mut identity = fixture.clone();
                    identity["id"] = Value::String(id.into_inner());
                    if query.get("include_credential").map(String::as_str) != Some("password") {
                        if let Some(map) = identity.as_object_mut() {
                            map.remove("credentials");
                        }
                    }
                    async move { HttpResponse::Ok().json(identity) }
                }),
            )
            .route(
                "/admin/identities/{id}",
                web::patch().to(move |id: web::Path<String>, body: web::Json<Value>| {
                    recorded.lock().expect("lock").push((id.into_inner(), body.into_inner()));
                    async { HttpResponse::Ok().finish() }
                }),
            )
    })
    .workers(1)
    .listen(listener)
    .expect("listen")
    .run();
    tokio::spawn(server);
    KratosAdminStandIn { url, patches }
}
