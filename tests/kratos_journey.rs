//! The account-recovery journey of a password user, end to end: a client talks to Kratos (the stand-in in
//! `support/standin_kratos`), which calls the plugin through our kit's hooks with bodies rendered by our
//! jsonnet template and honours the answers as Kratos does. Then the stand-in's own behaviour, which the
//! journey relies on.

use crate::support::kratos::KRATOS_KEY;
use crate::support::plugin::{check_password, password_state};
use crate::support::ports::closed_port;
use crate::support::standin_kratos::{
    Browser, Format, HookConfig, KratosClient, StandinKratos, ALL_FORMATS,
};
use crate::support::{spawn_app_with, TestApp};
use reclaim_common::settings::{ExpiryMode, OnExpired, Settings};
use reclaim_common::Secret;
use serde_json::Value;

/// The base URL clients use: the edge guard in front of the stand-in's public API.
fn through(app: &TestApp) -> String {
    app.guard.clone().expect("the guard runs")
}

const REUSE_REFUSED: &str =
    "You cannot reuse any of your last 5 passwords. Choose a password you have not used before.";

/// The plugin with Kratos hooks on, a 90-day `max_age` that blocks expired logins, a history of 5, the
/// stand-in's admin API for the hash import, and the edge guard in front of the stand-in's public API; the
/// stand-in runs our kit's hooks against the plugin and sends browsers back through the guard.
async fn journey_app(customize: impl FnOnce(&mut Settings)) -> (TestApp, StandinKratos) {
    let kratos = StandinKratos::start().await;
    let admin_url = kratos.admin_url.clone();
    let public_url = kratos.public_url.clone();
    let app = spawn_app_with(|settings| {
        settings.plugin.kratos.api_keys = vec![Secret::new(KRATOS_KEY)];
        settings.plugin.kratos.admin_url = admin_url;
        settings.plugin.kratos.public_url = public_url;
        settings.plugin.kratos.guard.listen = "127.0.0.1:0".into();
        let default = settings
            .plugin
            .policy
            .profiles
            .get_mut("default")
            .expect("default profile");
        default.expiry = ExpiryMode::MaxAge;
        default.max_age_days = 90;
        default.history_depth = 5;
        default.min_age_minutes = 0;
        default.grace_logins = 0;
        default.on_expired = OnExpired::Block;
        default.change_after_recovery = true;
        customize(settings);
    })
    .await;
    kratos.use_kit(&app);
    kratos.set_public_base_url(&through(&app));
    (app, kratos)
}

fn identity_id(answer: &Value) -> String {
    answer["identity"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no identity in {answer}"))
        .to_string()
}

fn email() -> String {
    format!(
        "user-{}@example.org",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

#[tokio::test]
async fn a_user_whose_password_expired_recovers_the_account_and_sets_a_password_not_used_before() {
    let (app, kratos) = journey_app(|_| {}).await;
    let client = KratosClient::new(&through(&app));
    let email = email();
    let first = "first secret of jane";

    // Registration through the guard, which keeps the new password's digest under the flow id: the
    // pre-persist hook stamps the change time into metadata_public, the post-persist hook creates the password
    // state with that digest as its first history entry.
    let registered = client.register(&email, first).await;
    assert_eq!(registered.status, 200, "{}", registered.body);
    let id = identity_id(&registered.body);
    assert!(
        registered.body["identity"]["metadata_public"]["password_changed_at"].is_string(),
        "{}",
        registered.body
    );
    kratos.settle().await;
    let state = password_state(&app, &id).await;
    assert_eq!(state["history_entries"], 1, "{state}");
    assert_eq!(state["expired"], false, "{state}");

    // A login with the password works, and the user changes it in the settings: through the guard, which
    // checks it and leaves the verdict the settings hooks commit.
    let login = client.login(&email, first).await;
    assert_eq!(login.status, 200, "{}", login.body);
    let session = login.body["session_token"]
        .as_str()
        .expect("session token")
        .to_string();
    let second = "second secret of jane";
    let changed = client.change_password_anew(&session, second).await;
    assert_eq!(changed.status, 200, "{}", changed.body);
    kratos.settle().await;
    assert_eq!(password_state(&app, &id).await["history_entries"], 2);

    // The password reaches max_age: 91 days pass for the plugin and for Kratos.
    app.clock.advance(chrono::Duration::days(91));
    kratos.advance(chrono::Duration::days(91));
    assert_eq!(password_state(&app, &id).await["expired"], true);

    // The login is refused above the form, and the message sends the user to account recovery: a login
    // page cannot offer a password change.
    let refused = client.login(&email, second).await;
    assert_eq!(refused.status, 400, "{}", refused.body);
    assert_eq!(
        refused.global_messages(),
        vec![(
            4_470_003,
            "Your password has expired. Set a new one through account recovery.".to_string()
        )]
    );
    assert!(refused.body.get("session_token").is_none());

    // Account recovery by code: Kratos signs the user in (code_recovery) and opens a settings flow; the
    // recovery hook marks the password as one that must change.
    let recovered = client.recover(&kratos, &email).await;
    kratos.settle().await;
    let state = password_state(&app, &id).await;
    assert_eq!(state["must_change"], true, "{state}");
    assert_eq!(state["must_change_reason"], "recovery", "{state}");
    let whoami = client
        .whoami(&[("X-Session-Token", recovered.session_token.as_str())])
        .await;
    assert_eq!(
        whoami.body["authentication_methods"][0]["method"], "code_recovery",
        "{}",
        whoami.body
    );

    // The registration password is history from day one (committed from the guard's registration verdict).
    let reused = check_password(&app, &id, first).await;
    assert_eq!(reused["allowed"], false, "{reused}");
    assert_eq!(
        reused["violations"][0]["code"], "password_reused",
        "{reused}"
    );

    // One of the last 5 passwords (not the current one, which Kratos refuses itself) is refused on the
    // password field: the guard checked it on its way to Kratos and the settings hook shows its verdict.
    {
        let answer = client
            .change_password(
                &recovered.session_token,
                &recovered.settings_flow,
                first,
                Format::Json,
            )
            .await;
        assert_eq!(answer.status, 400, "{}", answer.body);
        assert_eq!(
            answer.node_messages("password"),
            vec![(4_470_001, REUSE_REFUSED.to_string())]
        );
    }

    // A fresh password is accepted and saved; the post-persist hook commits it (restarting expiry and
    // clearing the must-change mark).
    let fresh = "a brand new secret of jane";
    let changed = client
        .change_password(
            &recovered.session_token,
            &recovered.settings_flow,
            fresh,
            Format::Json,
        )
        .await;
    assert_eq!(changed.status, 200, "{}", changed.body);
    assert_eq!(changed.body["state"], "success", "{}", changed.body);
    kratos.settle().await;
    let state = password_state(&app, &id).await;
    assert_eq!(state["must_change"], false, "{state}");
    assert_eq!(state["expired"], false, "{state}");
    let changed_at = state["changed_at"].as_str().expect("changed_at");
    let changed_at = chrono::DateTime::parse_from_rfc3339(changed_at).expect("time");
    assert!(
        app.clock.now() - changed_at.to_utc() < chrono::Duration::minutes(5),
        "{state}"
    );
    let identity = kratos.identity_by_email(&email).expect("identity");
    assert!(
        identity["metadata_public"]["password_expires_at"].is_string(),
        "{identity}"
    );

    // The new password signs the user in; the old one no longer does.
    let login = client.login(&email, fresh).await;
    assert_eq!(login.status, 200, "{}", login.body);
    let token = login.body["session_token"]
        .as_str()
        .expect("token")
        .to_string();
    assert_eq!(client.login(&email, second).await.status, 400);

    // The history now holds the fresh password too (committed from the guard's verdict), and the earlier
    // ones still count when the change goes through Kratos.
    {
        let reused = check_password(&app, &id, fresh).await;
        assert_eq!(reused["allowed"], false, "{reused}");
        assert_eq!(
            reused["violations"][0]["code"], "password_reused",
            "{reused}"
        );
        let answer = client.change_password_anew(&token, first).await;
        assert_eq!(answer.status, 400, "{}", answer.body);
        assert_eq!(
            answer.node_messages("password"),
            vec![(4_470_001, REUSE_REFUSED.to_string())]
        );
    }
    let _ = token;
}

/// A registered user with an API session: (email, password, session token).
async fn signed_in(client: &KratosClient) -> (String, String, String) {
    let email = email();
    let password = "the password of a tester".to_string();
    let registered = client.register(&email, &password).await;
    assert_eq!(registered.status, 200, "{}", registered.body);
    let login = client.login(&email, &password).await;
    assert_eq!(login.status, 200, "{}", login.body);
    let token = login.body["session_token"]
        .as_str()
        .expect("token")
        .to_string();
    (email, password, token)
}

#[tokio::test]
async fn whoami_finds_the_session_by_token_bearer_and_cookie() {
    let (app, _kratos) = journey_app(|_| {}).await;
    let client = KratosClient::new(&through(&app));
    let (email, password, token) = signed_in(&client).await;

    for headers in [
        vec![("X-Session-Token", token.clone())],
        vec![("Authorization", format!("Bearer {token}"))],
    ] {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let answer = client.whoami(&headers).await;
        assert_eq!(answer.status, 200, "{headers:?}: {}", answer.body);
        assert_eq!(answer.body["identity"]["traits"]["email"], email.as_str());
        assert_eq!(
            answer.body["authentication_methods"][0]["method"],
            "password"
        );
    }

    let mut browser = Browser::new(&client.base);
    let login = browser.login(&email, &password).await;
    assert_eq!(login.status, 303, "{}", login.body);
    let cookie = browser
        .cookie("ory_kratos_session")
        .expect("session cookie")
        .to_string();
    let answer = client
        .whoami(&[("Cookie", format!("ory_kratos_session={cookie}").as_str())])
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["identity"]["traits"]["email"], email.as_str());

    for headers in [
        vec![],
        vec![("X-Session-Token", "not-a-token")],
        vec![("Cookie", "ory_kratos_session=not-a-cookie")],
    ] {
        let answer = client.whoami(&headers).await;
        assert_eq!(answer.status, 401, "{headers:?}");
        assert_eq!(answer.body["error"]["id"], "session_inactive");
    }
}

/// The `ctx.flow.id` of the calls to the hook with id `hook_id`.
fn hook_flow_ids(kratos: &StandinKratos, hook_id: &str) -> Vec<String> {
    kratos
        .hook_calls()
        .into_iter()
        .filter(|c| c.hook_id == hook_id)
        .map(|c| {
            c.body["flow"]["id"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect()
}

#[tokio::test]
async fn a_settings_submission_reaches_both_settings_hooks_in_every_body_format_and_by_get() {
    let (app, kratos) = journey_app(|_| {}).await;
    let client = KratosClient::new(&through(&app));
    let (email, _, token) = signed_in(&client).await;

    for (n, format) in ALL_FORMATS.into_iter().enumerate() {
        let flow = client.start("settings", Some(&token)).await;
        let password = format!("password number {n} for {format:?}");
        let answer = client
            .change_password(&token, &flow, &password, format)
            .await;
        assert_eq!(answer.status, 200, "{format:?}: {}", answer.body);
        assert_eq!(answer.body["state"], "success", "{format:?}");
        kratos.settle().await;
        for hook in [
            "reclaim-settings-password",
            "reclaim-settings-password-after",
        ] {
            assert_eq!(
                hook_flow_ids(&kratos, hook).last(),
                Some(&flow),
                "{format:?}: {hook} was called for the flow"
            );
        }
        assert_eq!(
            client.login(&email, &password).await.status,
            200,
            "{format:?}"
        );
    }
    // Each call carried its own trigger id, as Kratos's do.
    let triggers: Vec<_> = kratos
        .hook_calls()
        .into_iter()
        .map(|c| c.trigger_id.expect("trigger id"))
        .collect();
    let distinct: std::collections::BTreeSet<_> = triggers.iter().collect();
    assert_eq!(distinct.len(), triggers.len());
}

#[tokio::test]
async fn a_hook_refusal_shows_on_the_password_field_and_keeps_the_old_password() {
    // A minimum age of a day makes the plugin refuse a voluntary change right after registration.
    let (app, kratos) = journey_app(|settings| {
        if let Some(default) = settings.plugin.policy.profiles.get_mut("default") {
            default.min_age_minutes = 24 * 60;
        }
    })
    .await;
    let client = KratosClient::new(&through(&app));
    let (email, password, token) = signed_in(&client).await;

    let answer = client
        .change_password_anew(&token, "a password too soon after")
        .await;
    assert_eq!(answer.status, 400, "{}", answer.body);
    let messages = answer.node_messages("password");
    assert_eq!(messages.len(), 1, "{}", answer.body);
    assert_eq!(messages[0].0, 4_470_002, "{}", answer.body);
    assert!(
        messages[0]
            .1
            .starts_with("Your password was changed recently."),
        "{messages:?}"
    );
    assert!(answer.global_messages().is_empty(), "{}", answer.body);
    assert_eq!(answer.body["state"], "show_form");
    // Nothing was saved: the post-persist hook never ran and the old password still works.
    kratos.settle().await;
    assert!(hook_flow_ids(&kratos, "reclaim-settings-password-after").is_empty());
    assert_eq!(client.login(&email, &password).await.status, 200);
    assert_eq!(
        client
            .login(&email, "a password too soon after")
            .await
            .status,
        400
    );
}

#[tokio::test]
async fn hooks_that_ignore_their_answer_do_not_block_a_flow_when_the_plugin_is_down() {
    let (app, kratos) = journey_app(|_| {}).await;
    let down = closed_port();
    let mut hooks = HookConfig::kit(&app.plugin, KRATOS_KEY);
    let mut ignored = Vec::new();
    hooks.map_web_hooks(|config| {
        if config["response"]["ignore"] == true {
            ignored.push(config["id"].as_str().unwrap_or_default().to_string());
            config["url"] = format!("http://{}/hooks", down.addr()).into();
        }
    });
    assert!(
        ignored.contains(&"reclaim-settings-password-after".to_string()),
        "the kit's post-persist settings hook ignores its answer: {ignored:?}"
    );
    kratos.use_hooks(hooks);
    let client = KratosClient::new(&through(&app));
    let (email, _, token) = signed_in(&client).await;

    let answer = client
        .change_password_anew(&token, "changed while down")
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["state"], "success");
    kratos.settle().await;
    let failed = kratos
        .hook_calls()
        .into_iter()
        .find(|c| c.hook_id == "reclaim-settings-password-after")
        .expect("the ignored hook was tried");
    assert_eq!(failed.attempts, vec![None, None, None], "tried and retried");
    assert_eq!(client.login(&email, "changed while down").await.status, 200);
}

#[tokio::test]
async fn hooks_that_read_or_await_their_answer_fail_the_flow_when_the_plugin_is_down() {
    let (app, kratos) = journey_app(|_| {}).await;
    let down = closed_port();
    let client = KratosClient::new(&through(&app));
    let (email, password, token) = signed_in(&client).await;
    let hook = |parse: bool| {
        format!(
            "
selfservice:
  flows:
    settings:
      after:
        password:
          hooks:
            - hook: web_hook
              config:
                id: down
                url: http://{}/hooks
                method: POST
                body: file:///etc/config/kratos/reclaim.jsonnet
                response:
                  parse: {parse}
",
            down.addr()
        )
    };

    // A parsing hook runs before the password is saved: the change fails and nothing is saved.
    kratos.use_hooks(HookConfig::from_yaml(&hook(true)));
    let answer = client
        .change_password_anew(&token, "never saved password")
        .await;
    assert_eq!(answer.status, 500, "{}", answer.body);
    assert_eq!(client.login(&email, &password).await.status, 200);

    // A hook that neither parses nor ignores runs after the save: the client sees the failure, yet the
    // password is already changed.
    kratos.use_hooks(HookConfig::from_yaml(&hook(false)));
    let answer = client
        .change_password_anew(&token, "saved despite the error")
        .await;
    assert_eq!(answer.status, 500, "{}", answer.body);
    assert_eq!(
        client.login(&email, "saved despite the error").await.status,
        200
    );
    let calls: Vec<_> = kratos
        .hook_calls()
        .into_iter()
        .filter(|c| c.hook_id == "down")
        .collect();
    assert_eq!(calls.len(), 2);
    assert!(calls.iter().all(|c| c.attempts == vec![None, None, None]));
}

#[tokio::test]
async fn an_api_settings_change_on_an_old_session_needs_a_refresh_and_the_password_again() {
    let (app, kratos) = journey_app(|_| {}).await;
    let client = KratosClient::new(&through(&app));
    let (email, password, token) = signed_in(&client).await;
    kratos.advance(chrono::Duration::minutes(61));
    let flow = client.start("settings", Some(&token)).await;

    let answer = client
        .change_password(&token, &flow, "changed after refresh", Format::Json)
        .await;
    assert_eq!(answer.status, 403, "{}", answer.body);
    assert_eq!(answer.body["error"]["id"], "session_refresh_required");
    let redirect = answer.body["redirect_browser_to"]
        .as_str()
        .expect("redirect");
    assert!(
        redirect.contains("/self-service/login/browser?refresh=true&return_to="),
        "{redirect}"
    );
    assert!(hook_flow_ids(&kratos, "reclaim-settings-password").is_empty());

    let refreshed = client.refresh(&token, &email, &password).await;
    assert_eq!(refreshed.status, 200, "{}", refreshed.body);
    assert_eq!(
        refreshed.body["session_token"],
        token.as_str(),
        "same session"
    );
    let answer = client
        .change_password(&token, &flow, "changed after refresh", Format::Json)
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(
        hook_flow_ids(&kratos, "reclaim-settings-password"),
        vec![flow]
    );
}

#[tokio::test]
async fn a_browser_settings_change_on_an_old_session_is_paused_and_completed_after_reauthentication(
) {
    let (app, kratos) = journey_app(|_| {}).await;
    let base = through(&app);
    let client = KratosClient::new(&base);
    let email = email();
    let password = "the browser user's password";
    assert_eq!(client.register(&email, password).await.status, 200);
    let mut browser = Browser::new(&base);
    assert_eq!(browser.login(&email, password).await.status, 303);
    kratos.advance(chrono::Duration::minutes(61));
    let flow = browser.start("settings", "").await;

    // The submission is kept and the browser is sent to a refresh login that returns to the submit URL.
    let fresh = "changed in the browser";
    let answer = browser
        .post_form(
            &format!("/self-service/settings?flow={flow}"),
            &[("method", "password"), ("password", fresh)],
        )
        .await;
    assert_eq!(answer.status, 303, "{}", answer.body);
    let login_url = answer.location.expect("redirect to login");
    assert!(login_url.contains("refresh=true"), "{login_url}");
    assert!(browser.cookie("ory_kratos_continuity").is_some());
    assert!(hook_flow_ids(&kratos, "reclaim-settings-password").is_empty());

    // Ten minutes later the user signs in again.
    kratos.advance(chrono::Duration::minutes(10));
    let signed_in = browser.reauthenticate(&login_url, &email, password).await;
    assert_eq!(signed_in.status, 303, "{}", signed_in.body);
    let return_to = signed_in.location.expect("return_to");
    assert!(
        return_to.ends_with(&format!("/self-service/settings?flow={flow}")),
        "{return_to}"
    );

    // Back on the submit URL without the password: Kratos completes the paused change, calling the
    // hooks with the same flow id.
    let done = browser.get(&return_to).await;
    assert_eq!(done.status, 303, "{}", done.body);
    kratos.settle().await;
    assert_eq!(
        hook_flow_ids(&kratos, "reclaim-settings-password"),
        vec![flow.clone()]
    );
    assert_eq!(
        hook_flow_ids(&kratos, "reclaim-settings-password-after"),
        vec![flow]
    );
    assert!(browser.cookie("ory_kratos_continuity").is_none());
    assert_eq!(client.login(&email, fresh).await.status, 200);
}

#[tokio::test]
async fn a_paused_browser_submission_is_forgotten_after_fifteen_minutes() {
    let (app, kratos) = journey_app(|_| {}).await;
    let base = through(&app);
    let client = KratosClient::new(&base);
    let email = email();
    let password = "the browser user's password";
    assert_eq!(client.register(&email, password).await.status, 200);
    let mut browser = Browser::new(&base);
    assert_eq!(browser.login(&email, password).await.status, 303);
    kratos.advance(chrono::Duration::minutes(61));
    let flow = browser.start("settings", "").await;
    let answer = browser
        .post_form(
            &format!("/self-service/settings?flow={flow}"),
            &[("method", "password"), ("password", "too late to apply")],
        )
        .await;
    assert_eq!(answer.status, 303);
    let login_url = answer.location.expect("redirect to login");
    kratos.advance(chrono::Duration::minutes(16));
    let signed_in = browser.reauthenticate(&login_url, &email, password).await;
    assert_eq!(signed_in.status, 303, "{}", signed_in.body);
    // The GET carries no fields and the paused ones expired: nothing is changed.
    let late = browser
        .get(&format!("/self-service/settings?flow={flow}"))
        .await;
    assert_eq!(late.status, 303, "{}", late.body);
    assert!(hook_flow_ids(&kratos, "reclaim-settings-password").is_empty());
    assert_eq!(client.login(&email, password).await.status, 200);
}
