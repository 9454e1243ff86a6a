//! Recovery code sends through the edge guard: Kratos's courier hands the email to the gateway, which counts
//! it against the abuse limits; a send or resend (`method=code` with the address) over a limit is refused by
//! the guard before Kratos sees it, in Kratos's shapes: 400 with the flow for API clients, a redirect to the
//! recovery UI for browsers, whose next fetch of the flow carries the message once.

use crate::gateway_messages::delivered;
use crate::support::kratos::KRATOS_KEY;
use crate::support::standin_kratos::client::Browser;
use crate::support::standin_kratos::{Courier, KratosClient, StandinKratos};
use crate::support::{spawn_app_in, TestApp};
use reclaim_common::settings::{ProviderKind, Settings};
use reclaim_common::Secret;
use reclaim_gateway::RunMode;
use serde_json::{json, Value};

const COURIER_KEY: &str = "courier-key-for-tests";
const RECOVERY_UI: &str = "https://app.example.com/recovery";

/// The stand-in Kratos behind the guard, its courier delivering to the gateway (emails to the `file`
/// provider), the plugin's hooks from the kit.
async fn recovery_app(
    customize: impl FnOnce(&mut Settings),
) -> (TestApp, StandinKratos, tempfile::TempDir) {
    let kratos = StandinKratos::start().await;
    let dir = tempfile::tempdir().expect("dir");
    let (admin_url, public_url) = (kratos.admin_url.clone(), kratos.public_url.clone());
    let outbox = dir.path().to_string_lossy().into_owned();
    let app = spawn_app_in(RunMode::ApiOnly, |s| {
        s.plugin.kratos.api_keys = vec![Secret::new(KRATOS_KEY)];
        s.plugin.kratos.admin_url = admin_url;
        s.plugin.kratos.public_url = public_url;
        s.plugin.kratos.guard.listen = "127.0.0.1:0".into();
        s.plugin.kratos.guard.recovery_ui_url = RECOVERY_UI.into();
        s.gateway.kratos.api_keys = vec![Secret::new(COURIER_KEY)];
        s.gateway.file.dir = outbox;
        s.gateway.channels.email.provider = ProviderKind::File;
        customize(s);
    })
    .await;
    kratos.use_kit(&app);
    let guard = app.guard.clone().expect("the guard runs");
    kratos.set_public_base_url(&guard);
    kratos.use_courier(Courier {
        url: app.gateway_url("/hooks/kratos/courier"),
        header: "X-Reclaim-Key".into(),
        key: COURIER_KEY.into(),
    });
    (app, kratos, dir)
}

fn email() -> String {
    format!(
        "user-{}@example.org",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

fn ours(messages: &[(u64, String)]) -> Vec<&(u64, String)> {
    messages.iter().filter(|(id, _)| *id == 4_470_020).collect()
}

#[tokio::test]
async fn an_api_client_asking_for_a_code_again_too_soon_gets_the_flow_with_our_message() {
    let (app, kratos, dir) = recovery_app(|_| {}).await;
    let guard = app.guard.clone().expect("guard");
    let client = KratosClient::new(&guard);
    let email = email();
    assert_eq!(
        client.register(&email, "a secret of jane's").await.status,
        200
    );
    kratos.settle().await;

    // The first code: Kratos sends it through the courier, the gateway counts it.
    let flow = client.send_recovery_code(&email).await;
    let code = kratos.recovery_code(&email).expect("a code was emailed");
    app.delivery.drain_at(app.clock.now()).await.expect("drain");
    assert_eq!(delivered(dir.path()).len(), 1);

    // "Resend code" seconds later: within the destination's cooldown (30 s).
    let resend = client
        .http
        .post(format!("{guard}/self-service/recovery?flow={flow}"))
        .json(&json!({"method": "code", "email": email}))
        .send()
        .await
        .expect("resend");
    assert_eq!(resend.status(), 400);
    let body: Value = resend.json().await.expect("flow JSON");
    assert_eq!(body["id"], flow.as_str(), "{body}");
    let messages = body["ui"]["messages"].as_array().expect("messages");
    let refusal = messages
        .iter()
        .find(|m| m["id"] == 4_470_020)
        .unwrap_or_else(|| panic!("no refusal in {body}"));
    assert_eq!(refusal["type"], "error");
    assert_eq!(refusal["context"]["retry_after_seconds"], 30);
    assert_eq!(
        refusal["text"],
        "Too many codes were sent. Please wait 30 seconds before asking for another one."
    );
    assert_eq!(
        kratos.recovery_code(&email).as_deref(),
        Some(code.as_str()),
        "Kratos never saw the refused resend"
    );

    // After the cooldown the resend goes through to Kratos, whose courier call the gateway queues.
    app.clock.advance(chrono::Duration::seconds(31));
    let again = client
        .http
        .post(format!("{guard}/self-service/recovery?flow={flow}"))
        .json(&json!({"method": "code", "email": email}))
        .send()
        .await
        .expect("resend");
    assert_eq!(again.status(), 200);
    app.delivery.drain_at(app.clock.now()).await.expect("drain");
    assert_eq!(delivered(dir.path()).len(), 2);

    // Submitting the code is not a send: the guard lets it through whatever the limits say.
    let code = kratos.recovery_code(&email).expect("the new code");
    let submitted = client.submit_recovery_code(&flow, &code).await;
    assert_eq!(submitted.status, 200, "{}", submitted.body);
    assert_eq!(submitted.body["state"], "passed_challenge");
}

#[tokio::test]
async fn a_browser_refused_a_send_is_sent_back_to_the_ui_and_the_flow_shows_why_once() {
    let (app, _kratos, _dir) = recovery_app(|_| {}).await;
    let guard = app.guard.clone().expect("guard");
    let mut browser = Browser::new(&guard);
    // An address without an account is limited the same way: Kratos emails it too.
    let email = email();
    let flow = browser.start("recovery", "").await;
    let submit = format!("/self-service/recovery?flow={flow}");
    let sent = browser
        .post_form(&submit, &[("method", "code"), ("email", &email)])
        .await;
    assert_eq!(sent.status, 303, "{}", sent.body);

    let refused = browser
        .post_form(&submit, &[("method", "code"), ("email", &email)])
        .await;
    assert_eq!(refused.status, 303, "{}", refused.body);
    assert_eq!(
        refused.location.as_deref(),
        Some(format!("{RECOVERY_UI}?flow={flow}").as_str())
    );
    let shown = browser
        .get(&format!("/self-service/recovery/flows?id={flow}"))
        .await;
    assert_eq!(shown.status, 200, "{}", shown.body);
    assert_eq!(ours(&shown.global_messages()).len(), 1, "{}", shown.body);
    let again = browser
        .get(&format!("/self-service/recovery/flows?id={flow}"))
        .await;
    assert_eq!(again.status, 200);
    assert!(ours(&again.global_messages()).is_empty(), "shown once");
}
