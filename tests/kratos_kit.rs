//! The Kratos drop-in kit (`config/kratos/`) against Kratos's own configuration schema and hook rules, and what
//! the README's wiring section promises about it: merged as the README says into an integrator's kratos.yml,
//! every hook of theirs still runs; the hooks that need not interrupt run in the background and a lost one is
//! made up; Kratos's pass-through body template works; a retry may land on another plugin instance.

use crate::support::kratos::{
    self, call_hook, contract, for_identity, from_recovery_session, kratos_admin_stand_in,
    pre_persist, registered, render_body, send_raw, KRATOS_KEY,
};
use crate::support::plugin::{changed_days_ago, new_id, password_state};
use crate::support::{spawn_app_with, TestApp};
use jsonschema::{Retrieve, Uri};
use reclaim_common::shutdown::Shutdown;
use reclaim_common::Db;
use serde_json::{json, Value};

/// The only external reference in Kratos's schema is `ory://tracing-config` (the `tracing` key, which the kit
/// does not set). It is served as an open schema; any other reference is an error.
struct OryRefs;

impl Retrieve for OryRefs {
    fn retrieve(
        &self,
        uri: &Uri<String>,
    ) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
        if uri.as_str() == "ory://tracing-config" {
            Ok(serde_json::json!({"type": "object"}))
        } else {
            Err(format!("unexpected schema reference {}", uri.as_str()).into())
        }
    }
}

fn kratos_schema() -> jsonschema::Validator {
    let text = std::fs::read_to_string("../shared/contracts/kratos/config.schema.json")
        .expect("Kratos schema");
    let schema: Value = serde_json::from_str(&text).expect("schema is JSON");
    jsonschema::options()
        .with_retriever(OryRefs)
        .should_validate_formats(true)
        .build(&schema)
        .expect("schema compiles")
}

fn schema_errors(validator: &jsonschema::Validator, config: &Value) -> Vec<String> {
    validator
        .iter_errors(config)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

/// The smallest kratos.yml an integrator could have before adding our keys.
fn base_config() -> Value {
    json!({
        "dsn": "memory",
        "identity": {"schemas": [{"id": "default", "url": "file:///etc/config/kratos/identity.schema.json"}]},
        "selfservice": {"default_browser_return_url": "https://app.example.com/"}
    })
}

/// A kratos.yml as an integrator has it before adding Reclaim: Kratos's quickstart hooks after a password
/// registration (`contrib/quickstart/kratos/email-password/kratos.yml`), a CRM web hook in the generic
/// registration and settings lists (run for the methods without a list of their own), and other sessions
/// revoked after every login (generic list only), after a password change and after a recovery.
fn integrator_config() -> Value {
    let crm = |id: &str| {
        json!({"hook": "web_hook", "config": {
            "id": id, "url": "https://crm.example.com/kratos", "method": "POST",
            "body": "file:///etc/config/kratos/crm.jsonnet"
        }})
    };
    let mut config = base_config();
    config["selfservice"]["flows"] = json!({
        "registration": {"after": {
            "hooks": [crm("crm-registration")],
            "password": {"hooks": [{"hook": "session"}, {"hook": "show_verification_ui"}]}
        }},
        "login": {"after": {
            "hooks": [{"hook": "revoke_active_sessions"}, {"hook": "require_verified_address"}]
        }},
        "settings": {"after": {
            "hooks": [crm("crm-settings")],
            "password": {"hooks": [{"hook": "revoke_active_sessions"}]}
        }},
        "recovery": {"after": {"hooks": [{"hook": "revoke_active_sessions"}]}}
    });
    config
}

fn kit_snippet() -> Value {
    let text = std::fs::read_to_string("config/kratos/kratos.reclaim.yml").expect("kit snippet");
    serde_yaml_ng::from_str(&text).expect("snippet is YAML")
}

fn hook_list(list: &Value) -> Vec<Value> {
    list.as_array().cloned().unwrap_or_default()
}

/// README step 4, the merge by hand: for each list of the kit, the integrator's own list at that key is kept;
/// where they have none but the flow has a generic list, the generic hooks are copied in first (Kratos stops
/// running the generic list for a method that has its own); then our hooks go after theirs.
fn merge_by_hand(config: &mut Value, kit: &Value) {
    let flows = kit["selfservice"]["flows"].as_object().expect("kit flows");
    for (flow, spec) in flows {
        let after = &mut config["selfservice"]["flows"][flow]["after"];
        for (key, ours) in spec["after"].as_object().expect("kit after lists") {
            let generic = hook_list(&after["hooks"]);
            let (list, ours) = if key == "hooks" {
                (&mut after["hooks"], hook_list(ours))
            } else {
                (&mut after[key]["hooks"], hook_list(&ours["hooks"]))
            };
            let mut merged = hook_list(list);
            if key != "hooks" && merged.is_empty() {
                merged = generic;
            }
            merged.extend(ours);
            *list = Value::Array(merged);
        }
    }
}

/// What `kratos -c kratos.yml -c kratos.reclaim.yml` loads: ory/x configx loads each file with koanf, whose
/// merge joins objects key by key and lets a later file's list replace the earlier one.
fn second_config_file(config: &mut Value, kit: &Value) {
    match (config, kit) {
        (Value::Object(a), Value::Object(b)) => {
            for (key, value) in b {
                second_config_file(a.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
        (slot, value) => *slot = value.clone(),
    }
}

/// Deep merge with lists concatenated: adding a snippet without lists, or the kit without copying generic lists.
fn append_lists(into: &mut Value, from: Value) {
    match (into, from) {
        (Value::Object(a), Value::Object(b)) => {
            for (key, value) in b {
                append_lists(a.entry(key).or_insert(Value::Null), value);
            }
        }
        (Value::Array(a), Value::Array(b)) => a.extend(b),
        (slot, value) => *slot = value,
    }
}

/// When a hook runs: before the identity or the new password is saved (registration and settings only), or
/// after it (after the save; for login and recovery, after the flow succeeded).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Moment {
    BeforeSave,
    After,
}

/// The flows, methods and moments the test compares.
const CASES: &[(&str, &str, Moment)] = &[
    ("registration", "password", Moment::BeforeSave),
    ("registration", "password", Moment::After),
    ("registration", "oidc", Moment::BeforeSave),
    ("registration", "oidc", Moment::After),
    ("registration", "code", Moment::After),
    ("login", "password", Moment::After),
    ("login", "oidc", Moment::After),
    ("login", "code", Moment::After),
    ("settings", "password", Moment::BeforeSave),
    ("settings", "password", Moment::After),
    ("settings", "profile", Moment::After),
    ("recovery", "code", Moment::After),
];

/// The hooks Kratos runs for `method` in `flow` at `moment`, picked as `driver/registry_default_*.go` picks
/// them: before the save, only the method's own list; after it (and for login), the method's own list, or
/// the flow's generic list when the method has none; recovery has only the generic list. (Kratos counts the
/// hooks of a list that can run at that moment; every list here holds one that can, a web hook can at both.)
fn hooks_run(config: &Value, flow: &str, method: &str, moment: Moment) -> Vec<Value> {
    let after = &config["selfservice"]["flows"][flow]["after"];
    let own = hook_list(&after[method]["hooks"]);
    let generic = hook_list(&after["hooks"]);
    let chosen = match (flow, moment) {
        ("recovery", _) => generic,
        (_, Moment::BeforeSave) => own,
        _ if own.is_empty() => generic,
        _ => own,
    };
    chosen
        .into_iter()
        .filter(|hook| runs_at(flow, hook, moment))
        .collect()
}

/// `selfservice/hook/web_hook.go`: in registration and settings a web hook with `response.parse` (or the
/// deprecated `can_interrupt`) runs before the save and any other web hook after it. The other hooks used
/// here (`session`, `show_verification_ui`, `revoke_active_sessions`, `require_verified_address`) run after.
fn runs_at(flow: &str, hook: &Value, moment: Moment) -> bool {
    if flow != "registration" && flow != "settings" {
        return moment == Moment::After;
    }
    let config = &hook["config"];
    let parses = hook["hook"] == "web_hook"
        && (config["response"]["parse"] == true || config["can_interrupt"] == true);
    parses == (moment == Moment::BeforeSave)
}

/// Every case where a hook the integrator had no longer runs, with the hooks lost.
fn lost_hooks(before: &Value, after: &Value) -> Vec<String> {
    CASES
        .iter()
        .filter_map(|&(flow, method, moment)| {
            let now = hooks_run(after, flow, method, moment);
            let lost: Vec<String> = hooks_run(before, flow, method, moment)
                .into_iter()
                .filter(|hook| !now.contains(hook))
                .map(|hook| hook["hook"].as_str().unwrap_or_default().to_string())
                .collect();
            (!lost.is_empty()).then(|| format!("{flow}.{method} {moment:?}: {lost:?}"))
        })
        .collect()
}

#[test]
fn the_kit_merged_as_the_readme_says_keeps_every_integrator_hook_running_and_adds_ours() {
    let validator = kratos_schema();
    let integrator = integrator_config();
    assert_eq!(schema_errors(&validator, &integrator), Vec::<String>::new());
    let kit = kit_snippet();
    let mut merged = integrator.clone();
    merge_by_hand(&mut merged, &kit);
    assert_eq!(schema_errors(&validator, &merged), Vec::<String>::new());

    let mut kit_alone = base_config();
    append_lists(&mut kit_alone, kit.clone());
    for &(flow, method, moment) in CASES {
        let before = hooks_run(&integrator, flow, method, moment);
        let ours = hooks_run(&kit_alone, flow, method, moment);
        let now = hooks_run(&merged, flow, method, moment);
        // Exactly the integrator's hooks and ours: none lost, none doubled, other methods untouched.
        let mut expected = before.clone();
        expected.extend(ours);
        let sorted = |mut hooks: Vec<Value>| {
            hooks.sort_by_key(Value::to_string);
            hooks
        };
        assert_eq!(sorted(now), sorted(expected), "{flow}.{method} {moment:?}");
    }
    // The case that needed the copy: password logins still revoke other sessions and need a verified address.
    let login: Vec<Value> = hooks_run(&merged, "login", "password", Moment::After)
        .into_iter()
        .map(|hook| hook["hook"].clone())
        .collect();
    assert_eq!(
        login,
        [
            "revoke_active_sessions",
            "require_verified_address",
            "web_hook"
        ]
    );
}

#[test]
fn a_second_config_file_or_a_merge_without_the_generic_copy_loses_integrator_hooks() {
    let validator = kratos_schema();
    let integrator = integrator_config();
    let kit = kit_snippet();

    // `-c kratos.yml -c kratos.reclaim.yml`: our lists replace theirs.
    let mut layered = integrator.clone();
    second_config_file(&mut layered, &kit);
    assert_eq!(schema_errors(&validator, &layered), Vec::<String>::new());
    assert_eq!(
        lost_hooks(&integrator, &layered),
        [
            r#"registration.password After: ["session", "show_verification_ui"]"#,
            r#"login.password After: ["revoke_active_sessions", "require_verified_address"]"#,
            r#"settings.password After: ["revoke_active_sessions"]"#,
            r#"recovery.code After: ["revoke_active_sessions"]"#,
        ]
    );

    // Lists appended but the generic login list not copied: password logins stop revoking sessions.
    let mut appended = integrator.clone();
    append_lists(&mut appended, kit);
    assert_eq!(
        lost_hooks(&integrator, &appended),
        [r#"login.password After: ["revoke_active_sessions", "require_verified_address"]"#]
    );
}

#[test]
fn the_schema_check_catches_a_broken_hook() {
    let validator = kratos_schema();
    let mut config = integrator_config();
    let mut snippet = kit_snippet();
    // Kratos refuses a hook that both ignores and parses the response.
    snippet["selfservice"]["flows"]["login"]["after"]["password"]["hooks"][0]["config"]
        ["response"]["ignore"] = Value::Bool(true);
    merge_by_hand(&mut config, &snippet);
    assert!(!validator.is_valid(&config));
}

#[test]
fn every_hook_in_the_snippet_points_at_a_reclaim_route_with_our_template_and_its_answer_mode() {
    let snippet = kit_snippet();
    let flows = &snippet["selfservice"]["flows"];
    let hooks: Vec<Value> = [
        &flows["registration"]["after"]["password"]["hooks"],
        &flows["login"]["after"]["password"]["hooks"],
        &flows["recovery"]["after"]["hooks"],
        &flows["settings"]["after"]["password"]["hooks"],
    ]
    .into_iter()
    .flat_map(hook_list)
    .collect();
    let mut routes: Vec<(String, &str)> = hooks
        .iter()
        .map(|hook| {
            let config = &hook["config"];
            assert_eq!(config["body"], "file:///etc/config/kratos/reclaim.jsonnet");
            assert_eq!(config["auth"]["config"]["name"], "X-Reclaim-Key");
            let url = config["url"].as_str().expect("url");
            let response = &config["response"];
            let mode = match (response["parse"] == true, response["ignore"] == true) {
                (true, false) => "parse",
                (false, true) => "ignore",
                _ => "neither",
            };
            (
                url.trim_start_matches("http://reclaim:4470").to_string(),
                mode,
            )
        })
        .collect();
    routes.sort();
    // Kratos waits for the hooks that may refuse or change the identity; the others run in the background.
    let expected = [
        ("/hooks/kratos/login", "parse"),
        ("/hooks/kratos/recovery", "ignore"),
        ("/hooks/kratos/registration", "parse"),
        ("/hooks/kratos/registration/after", "ignore"),
        ("/hooks/kratos/settings/password", "parse"),
        ("/hooks/kratos/settings/password/after", "ignore"),
    ];
    let routes: Vec<(&str, &str)> = routes.iter().map(|(p, m)| (p.as_str(), *m)).collect();
    assert_eq!(routes, expected);
}

/// The `migrate_hook` snippet the README shows under "Importing existing passwords", as YAML.
fn readme_migration_snippet() -> Value {
    let readme = std::fs::read_to_string("README.md").expect("README");
    let block = readme
        .split("```yaml")
        .skip(1)
        .filter_map(|rest| rest.split("```").next())
        .find(|block| block.contains("migrate_hook:"))
        .expect("the README shows a migrate_hook snippet");
    let text: String = block
        .lines()
        .map(|line| line.strip_prefix("   ").unwrap_or(line))
        .collect::<Vec<_>>()
        .join("\n");
    serde_yaml_ng::from_str(&text).expect("the snippet is YAML")
}

#[test]
fn the_readme_password_migration_snippet_validates_and_points_at_our_hook() {
    let validator = kratos_schema();
    let snippet = readme_migration_snippet();
    let hook = &snippet["selfservice"]["methods"]["password"]["config"]["migrate_hook"];
    assert_eq!(hook["enabled"], true);
    assert_eq!(
        hook["config"]["url"],
        "http://reclaim:4470/hooks/kratos/password-migration"
    );
    let mut config = base_config();
    append_lists(&mut config, snippet.clone());
    assert_eq!(schema_errors(&validator, &config), Vec::<String>::new());
    // The check can fail: Kratos's schema allows only POST.
    let mut broken = snippet;
    broken["selfservice"]["methods"]["password"]["config"]["migrate_hook"]["config"]["method"] =
        Value::String("GET".into());
    let mut config = base_config();
    append_lists(&mut config, broken);
    assert!(!validator.is_valid(&config));
}

fn kratos_settings(settings: &mut reclaim_common::settings::Settings) {
    crate::plugin_passwords::fast_kdf(settings);
    kratos::kratos_settings(settings);
}

/// Kratos's pass-through template `function(ctx) ctx` (`shared/contracts/kratos/webhook-body.jsonnet`) sends
/// the hook context itself, which is what the contract payloads are.
#[tokio::test]
async fn kratos_pass_through_body_template_works_for_every_hook() {
    let app = spawn_app_with(kratos_settings).await;
    let id = new_id();
    let send = async |path: &str, ctx: &Value| {
        send_raw(
            &app,
            path,
            ctx.to_string().into_bytes(),
            Some(KRATOS_KEY),
            &new_id(),
        )
        .await
    };
    let answer = send("/hooks/kratos/registration", &pre_persist(&id, "default")).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let stamped = &answer.body["identity"]["metadata_public"];
    assert!(stamped["password_changed_at"].is_string(), "{stamped}");
    // The default profile does not expire passwords: the key is there, with null.
    assert_eq!(stamped.get("password_expires_at"), Some(&Value::Null));
    let post = for_identity(
        contract("webhook-registration-password.json"),
        &id,
        "default",
    );
    send("/hooks/kratos/registration/after", &post)
        .await
        .assert_proceeds();
    let login = for_identity(contract("webhook-login-password.json"), &id, "default");
    send("/hooks/kratos/login", &login).await.assert_proceeds();
    let recovery = for_identity(contract("webhook-recovery.json"), &id, "default");
    send("/hooks/kratos/recovery", &recovery)
        .await
        .assert_proceeds();
    assert_eq!(password_state(&app, &id).await["must_change"], true);
    let settings = from_recovery_session(for_identity(
        contract("webhook-settings-password.json"),
        &id,
        "default",
    ));
    let answer = send("/hooks/kratos/settings/password", &settings).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    send("/hooks/kratos/settings/password/after", &settings)
        .await
        .assert_proceeds();
    assert_eq!(password_state(&app, &id).await["must_change"], false);
}

/// The registration post-persist hook runs in the background; when it never reaches Reclaim, the identity's
/// first login creates its state from the change time the pre-persist hook stamped and imports its hash.
#[tokio::test]
async fn a_lost_registration_after_call_is_made_up_at_the_first_login() {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let salt = SaltString::encode_b64(b"reclaim-test-salt").expect("salt");
    let params = argon2::Params::new(8_192, 1, 1, None).expect("params");
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let hash = argon
        .hash_password(b"correct horse battery", &salt)
        .expect("hash")
        .to_string();
    let admin = kratos_admin_stand_in(&hash).await;
    let app = spawn_app_with(|settings| {
        kratos_settings(settings);
        settings.plugin.kratos.admin_url = admin.url.clone();
    })
    .await;
    let id = new_id();
    let answer = call_hook(
        &app,
        "/hooks/kratos/registration",
        &pre_persist(&id, "default"),
        &new_id(),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let stamped = answer.body["identity"]["metadata_public"].clone();
    assert_eq!(
        password_state(&app, &id).await["error"]["code"],
        "unknown_identity"
    );

    // The stamp is back in the identity Kratos sends later; set it 10 days back to tell it from "now".
    let changed_at = (chrono::Utc::now() - chrono::Duration::days(10))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let mut metadata = stamped;
    metadata["password_changed_at"] = Value::String(changed_at.clone());
    let mut login = for_identity(contract("webhook-login-password.json"), &id, "default");
    login["identity"]["metadata_public"] = metadata;
    call_hook(&app, "/hooks/kratos/login", &login, &new_id())
        .await
        .assert_proceeds();
    let state = password_state(&app, &id).await;
    assert_eq!(state["changed_at"], changed_at.as_str(), "{state}");
    assert_eq!(state["history_entries"], 1, "{state}");
}

/// A hook call to a plugin instance at `base` (not the harness's), as Kratos sends it.
async fn call_instance(
    app: &TestApp,
    base: &str,
    path: &str,
    ctx: &Value,
    trigger: &str,
) -> (u16, Option<String>, Value) {
    let response = app
        .client
        .post(format!("{base}{path}"))
        .header("content-type", "application/json")
        .header("ory-webhook-trigger-id", trigger)
        .header("x-reclaim-key", KRATOS_KEY)
        .body(render_body(ctx).to_string())
        .send()
        .await
        .expect("hook request");
    let status = response.status().as_u16();
    let replayed = response
        .headers()
        .get("idempotent-replayed")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = response.json().await.unwrap_or(Value::Null);
    (status, replayed, body)
}

/// Two plugin instances on one database, as the README describes running them: Kratos retries a call with the
/// same `Ory-Webhook-Trigger-ID`, and a retry that lands on the other instance gets the first answer.
#[tokio::test]
async fn a_kratos_retry_landing_on_another_instance_gets_the_first_answer() {
    let app = spawn_app_with(|settings| {
        kratos_settings(settings);
        if let Some(staff) = settings.plugin.policy.profiles.get_mut("staff") {
            staff.grace_logins = 2;
        }
    })
    .await;
    let other = reclaim_plugin::Application::build(
        &app.settings,
        Db::connect(&app.settings.database).expect("second pool"),
    )
    .await
    .expect("second instance");
    let other_url = format!("http://127.0.0.1:{}", other.port());
    tokio::spawn(other.run_until_stopped(Shutdown::default()));

    let id = new_id();
    call_hook(
        &app,
        "/hooks/kratos/registration",
        &pre_persist(&id, "staff"),
        &new_id(),
    )
    .await
    .assert_proceeds();
    registered(&app, &id, "staff").await;
    changed_days_ago(&app, &id, 100).await;
    let login = for_identity(contract("webhook-login-password.json"), &id, "staff");

    // The first call reaches this instance and takes a grace login; Kratos's retry reaches the other one.
    let trigger = new_id();
    let first = call_instance(&app, &app.plugin, "/hooks/kratos/login", &login, &trigger).await;
    let retry = call_instance(&app, &other_url, "/hooks/kratos/login", &login, &trigger).await;
    assert_eq!(first.0, 204, "{first:?}");
    assert_eq!((retry.0, &retry.2), (first.0, &first.2));
    assert_eq!(retry.1.as_deref(), Some("true"), "{retry:?}");
    assert_eq!(password_state(&app, &id).await["grace_logins_used"], 1);

    // A new login on the other instance takes the second grace login, and the next one is refused anywhere.
    let next = call_instance(&app, &other_url, "/hooks/kratos/login", &login, &new_id()).await;
    assert_eq!(next.0, 204, "{next:?}");
    let refused = call_instance(&app, &app.plugin, "/hooks/kratos/login", &login, &new_id()).await;
    assert_eq!(refused.0, 403, "{refused:?}");
}

#[test]
fn the_kit_courier_part_validates_and_sends_email_and_sms_to_the_gateway_with_our_body() {
    let validator = kratos_schema();
    let kit = kit_snippet();
    let mut config = integrator_config();
    config["courier"] = kit["courier"].clone();
    assert_eq!(schema_errors(&validator, &config), Vec::<String>::new());
    let courier = &kit["courier"];
    assert_eq!(courier["delivery_strategy"], "http");
    let channels = courier["channels"].as_array().expect("channels");
    assert_eq!(channels.len(), 1);
    assert_eq!(channels[0]["id"], "sms");
    assert_eq!(channels[0]["type"], "http");
    for request in [
        &courier["http"]["request_config"],
        &channels[0]["request_config"],
    ] {
        assert_eq!(
            request["url"],
            "http://reclaim-gateway:4471/hooks/kratos/courier"
        );
        assert_eq!(request["method"], "POST");
        assert_eq!(request["body"], "file:///etc/config/kratos/courier.jsonnet");
        assert_eq!(request["auth"]["type"], "api_key");
        assert_eq!(request["auth"]["config"]["name"], "X-Reclaim-Key");
        assert_eq!(request["auth"]["config"]["in"], "header");
    }
    // Kratos allows only the sms channel: a voice channel is refused by its schema, hence
    // `transient_payload.delivery` for calls.
    let mut voice = config.clone();
    voice["courier"]["channels"][0]["id"] = json!("voice");
    assert!(!validator.is_valid(&voice));
}

#[tokio::test]
async fn courier_bodies_from_the_kit_template_are_queued_by_the_gateway_without_the_identity_traits(
) {
    let (app, _dir) = crate::gateway_messages::spawn_gateway(|s| {
        s.gateway.kratos.api_keys = vec![reclaim_common::Secret::new(KRATOS_KEY)];
    })
    .await;
    for file in [
        "courier-email-recovery_code_valid.json",
        "courier-email-recovery_valid.json",
        "courier-email-verification_code_valid.json",
        "courier-sms-login_code_valid.json",
        "courier-sms-recovery_code_valid.json",
    ] {
        // The contracts' fictional 555-01XX number is held invalid by the gateway; a real one replaces it.
        let ctx: Value = serde_json::from_str(
            &std::fs::read_to_string(format!("../shared/contracts/kratos/{file}"))
                .expect("contract")
                .replace("+15555550123", "+14155550100"),
        )
        .expect("json");
        let output =
            kratos::render_template(std::path::Path::new("config/kratos/courier.jsonnet"), &ctx)
                .unwrap_or_else(|e| panic!("{file}: {e}"));
        let body: Value = serde_json::from_slice(&output).expect("body is JSON");
        assert_eq!(
            body["template_data"]["identity"],
            json!({"id": ctx["template_data"]["identity"]["id"]}),
            "{file}"
        );
        assert_eq!(
            body["request_headers"]["Accept-Language"], ctx["request_headers"]["Accept-Language"],
            "{file}"
        );
        let response = app
            .client
            .post(app.gateway_url("/hooks/kratos/courier"))
            .header("X-Reclaim-Key", KRATOS_KEY)
            .header("Content-Type", "application/json")
            .body(output)
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), 202, "{file}");
    }
}
