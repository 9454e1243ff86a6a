//! The hook sequence a Kratos user goes through, driven with Kratos's own payloads (rendered by our jsonnet
//! template), on the test backend.

use crate::support::kratos::{
    self, call_hook, contract, for_identity, from_recovery_session, kratos_settings, pre_persist,
    registered, send_raw, settings_hook, KRATOS_KEY,
};
use crate::support::plugin::{
    changed_days_ago, check_password, drop_password_tables, new_id, password_state, post_json,
};
use crate::support::{spawn_app_with, TestApp, ADMIN_TOKEN, API_TOKEN};
use reclaim_common::Secret;
use serde_json::Value;

/// The shared Kratos settings, with required changes after recovery and a history of 5 for contractors.
async fn kratos_app() -> TestApp {
    spawn_app_with(|settings| {
        kratos_settings(settings);
        let profiles = &mut settings.plugin.policy.profiles;
        if let Some(default) = profiles.get_mut("default") {
            default.change_after_recovery = true;
        }
        if let Some(contractor) = profiles.get_mut("contractor") {
            contractor.history_depth = 5;
        }
    })
    .await
}

/// Registers `id` through both registration hooks; the pre-persist one stamps the change time.
async fn register(app: &TestApp, id: &str, schema: &str) {
    let pre = pre_persist(id, schema);
    let answer = call_hook(app, "/hooks/kratos/registration", &pre, &new_id()).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let metadata = &answer.body["identity"]["metadata_public"];
    assert!(
        metadata["password_changed_at"].is_string(),
        "{}",
        answer.body
    );
    registered(app, id, schema).await;
}

#[tokio::test]
async fn a_kratos_user_goes_through_registration_login_recovery_and_settings() {
    let app = kratos_app().await;
    let id = new_id();
    register(&app, &id, "default").await;
    let state = password_state(&app, &id).await;
    assert!(state["changed_at"].is_string(), "{state}");

    // Login with a fresh password: allowed.
    let login = for_identity(contract("webhook-login-password.json"), &id, "default");
    let answer = call_hook(&app, "/hooks/kratos/login", &login, &new_id()).await;
    answer.assert_proceeds();

    // A voluntary change right after registration: too young, shown under the password field.
    let settings = for_identity(contract("webhook-settings-password.json"), &id, "default");
    let answer = settings_hook(&app, &settings).await;
    assert_eq!(answer.status, 400, "{}", answer.body);
    assert_eq!(
        answer.message_ids(),
        vec![("#/password".to_string(), 4_470_002)]
    );
    assert_eq!(answer.body["messages"][0]["messages"][0]["type"], "error");

    // The user recovers the account: the password must now be changed.
    let recovery = for_identity(contract("webhook-recovery.json"), &id, "default");
    let answer = call_hook(&app, "/hooks/kratos/recovery", &recovery, &new_id()).await;
    answer.assert_proceeds();
    let state = password_state(&app, &id).await;
    assert_eq!(state["must_change"], true, "{state}");
    assert_eq!(state["must_change_reason"], "recovery", "{state}");

    // A password login now is refused with a global message telling the user to recover.
    let answer = call_hook(&app, "/hooks/kratos/login", &login, &new_id()).await;
    assert_eq!(answer.status, 403, "{}", answer.body);
    assert_eq!(answer.message_ids(), vec![("#/".to_string(), 4_470_004)]);

    // The change made from the recovery session is exempt from the minimum age.
    let settings = from_recovery_session(settings);
    let answer = settings_hook(&app, &settings).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let metadata = &answer.body["identity"]["metadata_public"];
    assert!(
        metadata["password_changed_at"].is_string(),
        "{}",
        answer.body
    );
    let answer = call_hook(
        &app,
        "/hooks/kratos/settings/password/after",
        &settings,
        &new_id(),
    )
    .await;
    answer.assert_proceeds();
    let state = password_state(&app, &id).await;
    assert_eq!(state["must_change"], false, "{state}");

    // And logins work again.
    let answer = call_hook(&app, "/hooks/kratos/login", &login, &new_id()).await;
    answer.assert_proceeds();
}

#[tokio::test]
async fn a_staff_login_after_max_age_is_blocked_and_a_warn_profile_login_is_allowed() {
    let app = kratos_app().await;
    let staff = new_id();
    register(&app, &staff, "staff").await;
    changed_days_ago(&app, &staff, 91).await;
    let login = for_identity(contract("webhook-login-password.json"), &staff, "staff");
    let answer = call_hook(&app, "/hooks/kratos/login", &login, &new_id()).await;
    assert_eq!(answer.status, 403, "{}", answer.body);
    assert_eq!(answer.message_ids(), vec![("#/".to_string(), 4_470_003)]);

    let contractor = new_id();
    register(&app, &contractor, "contractor").await;
    changed_days_ago(&app, &contractor, 31).await;
    let login = for_identity(
        contract("webhook-login-password.json"),
        &contractor,
        "contractor",
    );
    let answer = call_hook(&app, "/hooks/kratos/login", &login, &new_id()).await;
    // Allowed with the warning: Kratos shows nothing on an allowed login, so no body at all.
    assert_eq!((answer.status, &answer.body), (204, &Value::Null));
}

#[tokio::test]
async fn a_password_recorded_through_the_api_expires_when_the_clock_passes_max_age() {
    let app = kratos_app().await;
    let id = new_id();
    let (status, recorded) = post_json(
        &app,
        "/v1/passwords/record",
        serde_json::json!({"identity_id": id, "schema_id": "staff", "password": "a staff password 1"}),
    )
    .await;
    assert_eq!(status, 200, "{recorded}");
    let login = for_identity(contract("webhook-login-password.json"), &id, "staff");
    let fresh = password_state(&app, &id).await;
    assert_eq!(
        (&fresh["profile"], &fresh["expired"], &fresh["days_left"]),
        (&Value::from("staff"), &Value::Bool(false), &Value::from(90)),
        "{fresh}"
    );
    call_hook(&app, "/hooks/kratos/login", &login, &new_id())
        .await
        .assert_proceeds();

    // The staff profile's max_age is 90 days; nothing stored is touched, only the plugin's clock moves.
    app.clock.advance(chrono::Duration::days(91));
    let state = password_state(&app, &id).await;
    assert_eq!(
        (&state["expired"], &state["days_left"], &state["changed_at"]),
        (&Value::Bool(true), &Value::from(0), &fresh["changed_at"]),
        "{state}"
    );
    let answer = call_hook(&app, "/hooks/kratos/login", &login, &new_id()).await;
    assert_eq!(answer.status, 403, "{}", answer.body);
    assert_eq!(answer.message_ids(), vec![("#/".to_string(), 4_470_003)]);
}

#[tokio::test]
async fn registration_stamps_expiry_for_max_age_profiles_and_keeps_existing_metadata() {
    let app = kratos_app().await;
    let mut ctx = for_identity(
        contract("webhook-registration-password-pre-persist.json"),
        &new_id(),
        "staff",
    );
    ctx["identity"]["metadata_public"] = serde_json::json!({"plan": "gold"});
    let answer = call_hook(&app, "/hooks/kratos/registration", &ctx, &new_id()).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let metadata = &answer.body["identity"]["metadata_public"];
    assert_eq!(metadata["plan"], "gold");
    let changed = chrono::DateTime::parse_from_rfc3339(
        metadata["password_changed_at"].as_str().unwrap_or_default(),
    )
    .expect("changed_at");
    let expires = chrono::DateTime::parse_from_rfc3339(
        metadata["password_expires_at"].as_str().unwrap_or_default(),
    )
    .expect("expires_at");
    assert_eq!((expires - changed).num_days(), 90);
}

#[tokio::test]
async fn hooks_refuse_missing_or_wrong_keys_with_401_and_change_nothing() {
    let app = kratos_app().await;
    let id = new_id();
    let recovery = for_identity(contract("webhook-recovery.json"), &id, "default");
    let body = kratos::render_body(&recovery).to_string().into_bytes();
    for key in [None, Some("wrong-key")] {
        let answer = send_raw(&app, "/hooks/kratos/recovery", body.clone(), key, &new_id()).await;
        assert_eq!(answer.status, 401);
        assert!(answer.body.get("messages").is_none(), "{}", answer.body);
    }
    let body = password_state(&app, &id).await;
    assert_ne!(body["must_change"], true, "{body}");
}

#[tokio::test]
async fn a_broken_body_gets_a_400_in_kratos_shape_with_a_global_message() {
    let app = kratos_app().await;
    for body in [b"{not json".to_vec(), br#"{"flow": {}}"#.to_vec()] {
        let answer = send_raw(
            &app,
            "/hooks/kratos/settings/password",
            body,
            Some(KRATOS_KEY),
            &new_id(),
        )
        .await;
        assert_eq!(answer.status, 400, "{}", answer.body);
        assert_eq!(answer.message_ids(), vec![("#/".to_string(), 4_470_010)]);
    }
}

/// A `staff` identity whose password changed 100 days ago (past max age), on an app allowing
/// `grace_logins`, with its login payload.
async fn expired_staff_login(grace_logins: u32) -> (TestApp, String, Value) {
    let app = spawn_app_with(|settings| {
        settings.plugin.kratos.api_keys = vec![Secret::new(KRATOS_KEY)];
        if let Some(staff) = settings.plugin.policy.profiles.get_mut("staff") {
            staff.grace_logins = grace_logins;
        }
    })
    .await;
    let id = new_id();
    register(&app, &id, "staff").await;
    changed_days_ago(&app, &id, 100).await;
    let login = for_identity(contract("webhook-login-password.json"), &id, "staff");
    (app, id, login)
}

#[tokio::test]
async fn a_retried_login_hook_uses_one_grace_login_not_two() {
    let (app, id, login) = expired_staff_login(2).await;
    let trigger = new_id();
    for _ in 0..2 {
        let answer = call_hook(&app, "/hooks/kratos/login", &login, &trigger).await;
        answer.assert_proceeds();
    }
    assert_eq!(password_state(&app, &id).await["grace_logins_used"], 1);
    // A new login (new trigger id) uses the second; the third is refused.
    let answer = call_hook(&app, "/hooks/kratos/login", &login, &new_id()).await;
    answer.assert_proceeds();
    let answer = call_hook(&app, "/hooks/kratos/login", &login, &new_id()).await;
    assert_eq!(answer.status, 403, "{}", answer.body);
}

/// An app whose Kratos admin API (a stand-in) holds `hashed_password` for every identity, and a new
/// identity registered on it, whose current password was imported as its one history entry.
async fn registered_with_kratos_hash(
    hashed_password: &str,
) -> (TestApp, kratos::KratosAdminStandIn, String) {
    let admin = kratos::kratos_admin_stand_in(hashed_password).await;
    let app = spawn_app_with(|settings| {
        settings.plugin.kratos.api_keys = vec![Secret::new(KRATOS_KEY)];
        settings.plugin.kratos.admin_url = admin.url.clone();
    })
    .await;
    let id = new_id();
    register(&app, &id, "default").await;
    assert_eq!(password_state(&app, &id).await["history_entries"], 1);
    (app, admin, id)
}

#[tokio::test]
async fn the_current_kratos_password_becomes_history_so_it_cannot_be_reused_from_day_one() {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let salt = SaltString::encode_b64(b"reclaim-test-salt").expect("salt");
    let params = argon2::Params::new(8_192, 1, 1, None).expect("params");
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let hash = argon
        .hash_password(b"correct horse battery", &salt)
        .expect("hash")
        .to_string();
    let (app, admin, id) = registered_with_kratos_hash(&hash).await;

    let reused = check_password(&app, &id, "correct horse battery").await;
    assert_eq!(reused["allowed"], false, "{reused}");
    assert_eq!(reused["violations"][0]["code"], "password_reused");
    assert_eq!(
        check_password(&app, &id, "a brand new passphrase").await["allowed"],
        true
    );

    // Recovery mirrors the must-change mark into metadata_admin, keeping what Kratos already had there.
    let recovery = for_identity(contract("webhook-recovery.json"), &id, "default");
    call_hook(&app, "/hooks/kratos/recovery", &recovery, &new_id()).await;
    let patches = admin.patches.lock().expect("lock").clone();
    let (patched_id, patch) = patches.last().expect("a patch was sent");
    assert_eq!(patched_id, &id);
    assert_eq!(patch[0]["op"], "add");
    assert_eq!(patch[0]["path"], "/metadata_admin");
    assert_eq!(patch[0]["value"]["reclaim"]["must_change"], true, "{patch}");
    assert_eq!(
        patch[0]["value"]["reclaim"]["must_change_reason"],
        "recovery"
    );
    assert!(
        patch[0]["value"].get("baz").is_some(),
        "existing metadata_admin kept: {patch}"
    );
}

/// Kratos's default hasher is argon2id at m = 131072 KiB, t = 2, p = 1 with a 16-byte salt and key, as its
/// own fixture's hash has it; the import cap (`plugin/src/history/foreign.rs`) must admit that cost, so
/// lowering the cap below Kratos's default fails here.
#[tokio::test]
async fn a_hash_at_kratos_default_argon2_cost_is_imported_and_matched() {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let fixture = contract("admin-identity-with-credentials.json");
    let fixture_hash = fixture["credentials"]["password"]["config"]["hashed_password"]
        .as_str()
        .expect("the fixture has a password hash")
        .to_string();
    assert!(
        fixture_hash.starts_with("$argon2id$v=19$m=131072,t=2,p=1$"),
        "{fixture_hash}"
    );
    // The same parameters, salt and key lengths as the fixture, for a password the test knows.
    let salt = SaltString::encode_b64(&[7u8; 16]).expect("salt");
    let params = argon2::Params::new(131_072, 2, 1, Some(16)).expect("params");
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let hash = argon
        .hash_password(b"correct horse battery", &salt)
        .expect("hash")
        .to_string();
    let shape = |h: &str| {
        let parts: Vec<&str> = h.split('$').collect();
        assert_eq!(parts.len(), 6, "{h}");
        (parts[1..4].join("$"), parts[4].len(), parts[5].len())
    };
    assert_eq!(shape(&hash), shape(&fixture_hash));

    // Kratos's fixture hash itself is imported as the identity's current password.
    let (_app, _admin, _id) = registered_with_kratos_hash(&fixture_hash).await;

    // A hash of that shape for a known password is matched, so reusing the password is refused.
    let (app, _admin, id) = registered_with_kratos_hash(&hash).await;
    for (password, allowed) in [
        ("correct horse battery", false),
        ("a brand new passphrase", true),
    ] {
        let answer = check_password(&app, &id, password).await;
        assert_eq!(answer["allowed"], allowed, "{password}: {answer}");
    }
}

#[tokio::test]
async fn with_the_database_down_settings_fail_closed_and_login_fails_open() {
    let app = kratos_app().await;
    let id = new_id();
    register(&app, &id, "default").await;
    drop_password_tables(&app).await;
    let settings = for_identity(contract("webhook-settings-password.json"), &id, "default");
    let answer = settings_hook(&app, &settings).await;
    assert_eq!(answer.status, 400, "{}", answer.body);
    assert_eq!(answer.message_ids(), vec![("#/".to_string(), 4_470_011)]);
    let login = for_identity(contract("webhook-login-password.json"), &id, "default");
    let answer = call_hook(&app, "/hooks/kratos/login", &login, &new_id()).await;
    assert_eq!(answer.status, 204, "{}", answer.body);
}

#[tokio::test]
async fn twenty_concurrent_identical_login_hooks_with_one_trigger_id_decide_once() {
    let (app, id, login) = expired_staff_login(10).await;
    let trigger = new_id();
    // Rendered once: twenty jsonnet runs in a row would block this runtime long enough, on a loaded machine,
    // for the server's request timeout to close the connections opened first.
    let body = kratos::render_body(&login).to_string().into_bytes();
    let calls = (0..20).map(|_| {
        send_raw(
            &app,
            "/hooks/kratos/login",
            body.clone(),
            Some(KRATOS_KEY),
            &trigger,
        )
    });
    let answers = futures_util::future::join_all(calls).await;
    for answer in &answers {
        answer.assert_proceeds();
        assert_eq!(
            (answer.status, &answer.body),
            (answers[0].status, &answers[0].body)
        );
    }
    assert_eq!(password_state(&app, &id).await["grace_logins_used"], 1);
}

fn remembered_answers(app: &TestApp) -> i64 {
    use diesel::prelude::*;
    let mut conn = app.db.get().expect("conn");
    reclaim_common::schema::idempotency_keys::table
        .count()
        .get_result(&mut *conn)
        .expect("count")
}

#[tokio::test]
async fn erasure_forgets_the_remembered_answers_of_the_generic_api_and_of_the_kratos_hooks() {
    let app = kratos_app().await;
    let (id, other) = (new_id(), new_id());
    let recorded = app
        .client
        .post(app.plugin_url("/v1/passwords/record"))
        .bearer_auth(API_TOKEN)
        .header("Idempotency-Key", "first-password")
        .json(&serde_json::json!({"identity_id": id, "password": "a password 1"}))
        .send()
        .await
        .expect("record");
    assert_eq!(recorded.status(), 200);
    for who in [&id, &other] {
        let login = for_identity(contract("webhook-login-password.json"), who, "default");
        call_hook(&app, "/hooks/kratos/login", &login, &new_id())
            .await
            .assert_proceeds();
    }
    let recovery = for_identity(contract("webhook-recovery.json"), &id, "default");
    call_hook(&app, "/hooks/kratos/recovery", &recovery, &new_id())
        .await
        .assert_proceeds();
    assert_eq!(remembered_answers(&app), 4);

    let erased = app
        .client
        .delete(app.plugin_url(&format!("/admin/identities/{id}")))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("erase");
    assert_eq!(erased.status(), 204);
    // Only the other identity's login answer is left.
    assert_eq!(remembered_answers(&app), 1);
}

#[tokio::test]
async fn a_stamped_change_time_outside_the_clock_is_ignored_at_first_contact() {
    let app = kratos_app().await;
    for stamped in ["0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z"] {
        let id = new_id();
        let mut login = for_identity(contract("webhook-login-password.json"), &id, "contractor");
        login["identity"]["metadata_public"] = serde_json::json!({"password_changed_at": stamped});
        let answer = call_hook(&app, "/hooks/kratos/login", &login, &new_id()).await;
        answer.assert_proceeds();
        let state = password_state(&app, &id).await;
        let changed =
            chrono::DateTime::parse_from_rfc3339(state["changed_at"].as_str().unwrap_or_default())
                .map(|t| (chrono::Utc::now() - t.with_timezone(&chrono::Utc)).num_minutes());
        assert_eq!(changed, Ok(0), "{stamped}: {state}");
    }
}
