//! Gateway: the verification API (`/v1/verifications`): start, resend (same code, channel switch, links
//! superseded), check, cancel, expiry on the test clock, bad input, unknown destinations, and races.

use crate::gateway_messages::{delivered, spawn_gateway};
use crate::support::{TestApp, API_TOKEN};
use chrono::Duration;
use diesel::{QueryDsl, RunQueryDsl};
use reclaim_gateway::schema::gateway_verifications;
use serde_json::{json, Value};

async fn post(app: &TestApp, path: &str, body: Option<&Value>) -> (u16, Value, Option<String>) {
    let mut request = app
        .client
        .post(app.gateway_url(path))
        .bearer_auth(API_TOKEN);
    if let Some(body) = body {
        request = request.json(body);
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().expect("ascii").to_string());
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body, retry_after)
}

async fn get(app: &TestApp, id: &str) -> Value {
    let response = app
        .client
        .get(app.gateway_url(&format!("/v1/verifications/{id}")))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
    response.json().await.expect("json")
}

async fn start(app: &TestApp, body: Value) -> Value {
    let (status, view, _) = post(app, "/v1/verifications", Some(&body)).await;
    assert_eq!(status, 201, "{view}");
    view
}

async fn resend(app: &TestApp, id: &str, body: Option<Value>) -> (u16, Value, Option<String>) {
    post(
        app,
        &format!("/v1/verifications/{id}/resend"),
        body.as_ref(),
    )
    .await
}

async fn check(app: &TestApp, id: &str, code: &str) -> (u16, Value) {
    let (status, body, _) = post(
        app,
        &format!("/v1/verifications/{id}/check"),
        Some(&json!({ "code": code })),
    )
    .await;
    (status, body)
}

/// Delivers what is due at the test clock's time (verification messages are stamped with it).
async fn deliver(app: &TestApp) {
    app.delivery.drain_at(app.clock.now()).await.expect("drain");
}

/// The first run of `length` digits in a text.
fn digits_in(text: &str, length: usize) -> String {
    text.split(|c: char| !c.is_ascii_digit())
        .find(|run| run.len() == length)
        .unwrap_or_else(|| panic!("no {length}-digit code in {text:?}"))
        .to_string()
}

fn code_of(line: &Value) -> String {
    let content = &line["content"];
    if let Some(digits) = content["digits"].as_str() {
        return digits.to_string();
    }
    let text = content["body"]
        .as_str()
        .or_else(|| content["text"].as_str())
        .expect("a text part");
    digits_in(text, 6)
}

fn error_code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or_default()
}

fn sms_recovery() -> Value {
    json!({"channel": "sms", "to": "+14155550100", "purpose": "recovery"})
}

#[tokio::test]
async fn the_whole_lifecycle_start_resend_switch_to_voice_four_wrong_checks_then_the_right_one() {
    let (app, dir) = spawn_gateway(|_| {}).await;
    let view = start(&app, sms_recovery()).await;
    let id = view["id"].as_str().expect("id").to_string();
    assert_eq!(view["status"], "pending");
    assert_eq!(view["channel"], "sms");
    assert_eq!(view["kind"], "code");
    assert_eq!(view["sends_left"], 4);
    assert_eq!(view["checks_left"], 5);
    let to = view["to"].as_str().expect("to");
    assert!(!to.contains("4155550100") && to.starts_with("+1"), "{to}");
    let created = chrono::DateTime::parse_from_rfc3339(view["created_at"].as_str().expect("at"))
        .expect("time");
    let expires = chrono::DateTime::parse_from_rfc3339(view["expires_at"].as_str().expect("at"))
        .expect("time");
    assert_eq!(
        expires - created,
        Duration::minutes(20),
        "SMS codes live 20 minutes"
    );
    let resend_at =
        chrono::DateTime::parse_from_rfc3339(view["resend_available_at"].as_str().expect("at"))
            .expect("time");
    assert_eq!(resend_at - created, Duration::seconds(30));

    deliver(&app).await;
    let sent = delivered(dir.path());
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0]["channel"], "sms");
    let code = code_of(&sent[0]);

    // Too soon: the interval has not passed.
    let (status, body, retry_after) = resend(&app, &id, None).await;
    assert_eq!(
        (status, error_code(&body)),
        (429, "resend_too_soon"),
        "{body}"
    );
    assert_eq!(retry_after.as_deref(), Some("30"));

    app.clock.advance(Duration::seconds(31));
    let (status, body, _) = resend(&app, &id, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["sends_left"], 3);
    deliver(&app).await;
    let sent = delivered(dir.path());
    assert_eq!(sent.len(), 2);
    assert_eq!(
        code_of(&sent[1]),
        code,
        "a resend repeats the code while it is valid"
    );

    app.clock.advance(Duration::seconds(31));
    let (status, body, _) = resend(&app, &id, Some(json!({"channel": "voice"}))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["channel"], "voice");
    deliver(&app).await;
    let sent = delivered(dir.path());
    assert_eq!(sent.len(), 3);
    assert_eq!(sent[2]["channel"], "voice");
    assert_eq!(sent[2]["content"]["digits"], code.as_str());

    let wrong = if code == "000000" { "111111" } else { "000000" };
    for left in [4, 3, 2, 1] {
        let (status, body) = check(&app, &id, wrong).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["status"], "pending");
        assert_eq!(body["checks_left"], left);
    }
    let (status, body) = check(&app, &id, &code).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "approved");

    let (status, body) = check(&app, &id, &code).await;
    assert_eq!(
        (status, error_code(&body)),
        (409, "verification_approved"),
        "single use"
    );
    let (status, body, _) = resend(&app, &id, None).await;
    assert_eq!((status, error_code(&body)), (409, "verification_approved"));

    let shown = get(&app, &id).await;
    assert_eq!(shown["status"], "approved");
    let sends = shown["sends"].as_array().expect("sends");
    let channels: Vec<&str> = sends
        .iter()
        .map(|s| s["channel"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(channels, ["sms", "sms", "voice"]);
    for send in sends {
        assert_eq!(send["message_status"], "sent", "{send}");
    }
}

#[tokio::test]
async fn a_resend_cancels_the_older_message_while_it_is_still_queued() {
    let (app, dir) = spawn_gateway(|_| {}).await;
    let id = start(&app, sms_recovery()).await["id"]
        .as_str()
        .expect("id")
        .to_string();
    app.clock.advance(Duration::seconds(30));
    let (status, _, _) = resend(&app, &id, None).await;
    assert_eq!(status, 200);
    let shown = get(&app, &id).await;
    let statuses: Vec<&str> = shown["sends"]
        .as_array()
        .expect("sends")
        .iter()
        .map(|s| s["message_status"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(statuses, ["canceled", "queued"]);
    deliver(&app).await;
    assert_eq!(
        delivered(dir.path()).len(),
        1,
        "one message reaches the person"
    );
}

#[tokio::test]
async fn a_resent_link_supersedes_the_older_one() {
    let (app, dir) = spawn_gateway(|_| {}).await;
    let view = start(
        &app,
        json!({"channel": "email", "to": "jane@example.com", "purpose": "recovery",
               "link_url": "https://app.example.com/recover?lang=en"}),
    )
    .await;
    let id = view["id"].as_str().expect("id").to_string();
    assert_eq!(view["kind"], "link");
    let created = chrono::DateTime::parse_from_rfc3339(view["created_at"].as_str().expect("at"))
        .expect("time");
    let expires = chrono::DateTime::parse_from_rfc3339(view["expires_at"].as_str().expect("at"))
        .expect("time");
    assert_eq!(
        expires - created,
        Duration::hours(24),
        "email links live 24 hours"
    );
    deliver(&app).await;
    let token_in = |line: &Value| {
        let text = line["content"]["text"].as_str().expect("text").to_string();
        let start = text
            .find("https://app.example.com/recover?lang=en&token=")
            .expect("link");
        text[start..]
            .split_whitespace()
            .next()
            .and_then(|link| link.split("token=").nth(1))
            .expect("token")
            .to_string()
    };
    let first = token_in(&delivered(dir.path())[0]);
    assert_eq!(first.len(), 32);

    app.clock.advance(Duration::seconds(30));
    let (status, _, _) = resend(&app, &id, None).await;
    assert_eq!(status, 200);
    deliver(&app).await;
    let second = token_in(&delivered(dir.path())[1]);
    assert_ne!(first, second, "a resend sends a new link");

    let (status, body) = check(&app, &id, &first).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "pending");
    assert_eq!(body["superseded"], true);
    assert_eq!(body["checks_left"], 4);
    let (status, body) = check(&app, &id, &second).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("approved")),
        "{body}"
    );

    let (status, body, _) = resend(&app, &id, Some(json!({"channel": "sms"}))).await;
    assert_eq!((status, error_code(&body)), (409, "verification_approved"));
}

#[tokio::test]
async fn a_code_expires_on_the_clock_and_its_message_is_never_sent_late() {
    let (app, dir) = spawn_gateway(|_| {}).await;
    let id = start(&app, sms_recovery()).await["id"]
        .as_str()
        .expect("id")
        .to_string();
    app.clock.advance(Duration::minutes(20));
    let (status, body) = check(&app, &id, "123456").await;
    assert_eq!(
        (status, error_code(&body)),
        (409, "verification_expired"),
        "{body}"
    );
    let (status, body, _) = resend(&app, &id, None).await;
    assert_eq!((status, error_code(&body)), (409, "verification_expired"));
    let shown = get(&app, &id).await;
    assert_eq!(shown["status"], "expired");
    assert_eq!(shown["checks_left"], 0);
    assert!(shown["resend_available_at"].is_null());
    deliver(&app).await;
    assert!(
        delivered(dir.path()).is_empty(),
        "nothing is sent after expiry"
    );
}

#[tokio::test]
async fn purpose_lifetimes_replace_the_channel_ones() {
    let (app, _dir) = spawn_gateway(|s| {
        s.gateway
            .verifications
            .purpose_ttl_seconds
            .insert("login".into(), 300);
    })
    .await;
    let view = start(
        &app,
        json!({"channel": "sms", "to": "+14155550100", "purpose": "login"}),
    )
    .await;
    let created = chrono::DateTime::parse_from_rfc3339(view["created_at"].as_str().expect("at"))
        .expect("time");
    let expires = chrono::DateTime::parse_from_rfc3339(view["expires_at"].as_str().expect("at"))
        .expect("time");
    assert_eq!(expires - created, Duration::minutes(5));
}

#[tokio::test]
async fn sends_and_checks_run_out() {
    let (app, dir) = spawn_gateway(|s| s.gateway.verifications.max_sends = 2).await;
    let id = start(&app, sms_recovery()).await["id"]
        .as_str()
        .expect("id")
        .to_string();
    app.clock.advance(Duration::seconds(30));
    let (status, body, _) = resend(&app, &id, None).await;
    assert_eq!(status, 200);
    assert_eq!(body["sends_left"], 0);
    assert!(body["resend_available_at"].is_null());
    app.clock.advance(Duration::seconds(30));
    let (status, body, _) = resend(&app, &id, None).await;
    assert_eq!(
        (status, error_code(&body)),
        (429, "max_sends_reached"),
        "{body}"
    );

    deliver(&app).await;
    let code = code_of(&delivered(dir.path())[0]);
    let wrong = if code == "000000" { "111111" } else { "000000" };
    for _ in 0..4 {
        assert_eq!(check(&app, &id, wrong).await.1["status"], "pending");
    }
    let (status, body) = check(&app, &id, wrong).await;
    assert_eq!(status, 200);
    assert_eq!(body["status"], "max_checks_reached");
    assert_eq!(body["checks_left"], 0);
    let (status, body) = check(&app, &id, &code).await;
    assert_eq!(
        (status, error_code(&body)),
        (409, "max_checks_reached"),
        "the right code no longer works"
    );
}

#[tokio::test]
async fn a_canceled_verification_takes_no_check_and_no_resend() {
    let (app, dir) = spawn_gateway(|_| {}).await;
    let id = start(&app, sms_recovery()).await["id"]
        .as_str()
        .expect("id")
        .to_string();
    let (status, body, _) = post(&app, &format!("/v1/verifications/{id}/cancel"), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "canceled");
    let (status, body) = check(&app, &id, "123456").await;
    assert_eq!((status, error_code(&body)), (409, "verification_canceled"));
    app.clock.advance(Duration::seconds(30));
    let (status, body, _) = resend(&app, &id, None).await;
    assert_eq!((status, error_code(&body)), (409, "verification_canceled"));
    let (status, body, _) = post(&app, &format!("/v1/verifications/{id}/cancel"), None).await;
    assert_eq!((status, error_code(&body)), (409, "verification_canceled"));
    deliver(&app).await;
    assert!(
        delivered(dir.path()).is_empty(),
        "the queued message was canceled"
    );
}

#[tokio::test]
async fn bad_input_gets_a_4xx_naming_the_field() {
    let (app, _dir) = spawn_gateway(|_| {}).await;
    let cases = [
        (
            json!({"channel": "fax", "to": "+14155550100", "purpose": "recovery"}),
            "channel",
        ),
        (
            json!({"channel": "sms", "to": "+14155550100", "purpose": "fun"}),
            "purpose",
        ),
        (
            json!({"channel": "sms", "to": "4155550100", "purpose": "recovery"}),
            "to",
        ),
        (
            json!({"channel": "email", "to": "jane", "purpose": "recovery"}),
            "to",
        ),
        (
            json!({"channel": "sms", "to": "+14155550100", "purpose": "recovery", "link_url": "https://a.example/r"}),
            "link_url",
        ),
        (
            json!({"channel": "email", "to": "jane@example.com", "purpose": "recovery", "link_url": "javascript:alert(1)"}),
            "link_url",
        ),
        (
            json!({"channel": "email", "to": "jane@example.com", "purpose": "device", "link_url": "https://a.example/r"}),
            "link_url",
        ),
        (
            json!({"channel": "sms", "to": "+14155550100", "purpose": "recovery", "client_ip": "localhost"}),
            "client_ip",
        ),
        (
            json!({"channel": "sms", "to": "+14155550100", "purpose": "recovery", "identity_id": ""}),
            "identity_id",
        ),
        (
            json!({"channel": "sms", "to": "+14155550100", "purpose": "recovery", "locale": "not a locale"}),
            "locale",
        ),
        (
            json!({"channel": "sms", "to": "+14155550100", "purpose": "recovery", "extra": 1}),
            "extra",
        ),
        (json!({"channel": "sms", "purpose": "recovery"}), "to"),
    ];
    for (body, field) in cases {
        let (status, answer, _) = post(&app, "/v1/verifications", Some(&body)).await;
        assert_eq!(status, 400, "{body} -> {answer}");
        assert_eq!(answer["error"]["field"], field, "{body} -> {answer}");
    }

    let id = start(&app, sms_recovery()).await["id"]
        .as_str()
        .expect("id")
        .to_string();
    for code in ["12345", "1234567", "12345a", ""] {
        let (status, body) = check(&app, &id, code).await;
        assert_eq!(status, 400, "{code:?}: {body}");
        assert_eq!(
            (error_code(&body), body["error"]["field"].as_str()),
            ("invalid_code", Some("code"))
        );
    }
    assert_eq!(
        get(&app, &id).await["checks_left"],
        5,
        "malformed codes are not checks"
    );
    let (status, body, _) = resend(&app, &id, Some(json!({"channel": "email"}))).await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (400, Some("channel")),
        "{body}"
    );
    let (status, body, _) = resend(&app, &id, Some(json!({"channel": "pigeon"}))).await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (400, Some("channel")),
        "{body}"
    );

    let unknown = uuid::Uuid::now_v7();
    for path in [
        format!("/v1/verifications/{unknown}/check"),
        "/v1/verifications/not-a-uuid/check".to_string(),
    ] {
        let (status, body, _) = post(&app, &path, Some(&json!({"code": "123456"}))).await;
        assert_eq!((status, error_code(&body)), (404, "not_found"), "{path}");
    }
    let unauthenticated = app
        .client
        .post(app.gateway_url("/v1/verifications"))
        .json(&sms_recovery())
        .send()
        .await
        .expect("request");
    assert_eq!(unauthenticated.status(), 401);
}

/// An answer without what differs between any two verifications (ids and times).
fn shape(mut view: Value) -> Value {
    for key in ["id", "created_at", "expires_at", "resend_available_at"] {
        view[key] = Value::Null;
    }
    view
}

#[tokio::test]
async fn an_unknown_destination_gets_the_same_answers_and_nothing_is_sent() {
    let (app, dir) = spawn_gateway(|_| {}).await;
    let known = start(&app, sms_recovery()).await;
    // Another number: the limits per destination count unknown destinations too.
    let mut body = json!({"channel": "sms", "to": "+14155550101", "purpose": "recovery"});
    body["known"] = json!(false);
    let unknown = start(&app, body).await;
    let masked = |mut view: Value| {
        view["to"] = Value::Null;
        shape(view)
    };
    assert_eq!(masked(known.clone()), masked(unknown.clone()));

    app.clock.advance(Duration::seconds(30));
    let (s1, b1, _) = resend(&app, known["id"].as_str().expect("id"), None).await;
    let (s2, b2, _) = resend(&app, unknown["id"].as_str().expect("id"), None).await;
    assert_eq!((s1, masked(b1)), (s2, masked(b2)));
    let (s1, b1) = check(&app, known["id"].as_str().expect("id"), "000000").await;
    let (s2, b2) = check(&app, unknown["id"].as_str().expect("id"), "000000").await;
    assert_eq!((s1, b1["status"].clone()), (s2, b2["status"].clone()));

    deliver(&app).await;
    let sent = delivered(dir.path());
    assert_eq!(
        sent.len(),
        1,
        "only the known destination's latest message: {sent:?}"
    );
    let shown = get(&app, unknown["id"].as_str().expect("id")).await;
    for send in shown["sends"].as_array().expect("sends") {
        assert!(send["message_id"].is_null(), "{send}");
    }
}

#[tokio::test]
async fn a_hundred_parallel_resends_send_at_most_the_allowed_number() {
    // The verification's own cap decides here; the limits per destination are off (they have their race
    // test below).
    let (app, _dir) = spawn_gateway(|s| {
        s.gateway.verifications.resend_interval_seconds = 0;
        s.gateway.limits.destination.enabled = false;
        s.database.pool_size = 8;
    })
    .await;
    let id = start(&app, sms_recovery()).await["id"]
        .as_str()
        .expect("id")
        .to_string();
    let answers = futures_util::future::join_all((0..100).map(|_| resend(&app, &id, None))).await;
    let accepted = answers.iter().filter(|(s, _, _)| *s == 200).count();
    let refused: Vec<&str> = answers
        .iter()
        .filter(|(s, _, _)| *s != 200)
        .map(|(_, b, _)| error_code(b))
        .collect();
    assert_eq!(accepted, 4, "5 sends in all, the first included");
    assert!(
        refused.iter().all(|c| *c == "max_sends_reached"),
        "{refused:?}"
    );
    let shown = get(&app, &id).await;
    assert_eq!(shown["sends"].as_array().expect("sends").len(), 5);
    let messages: i64 = {
        use reclaim_gateway::schema::gateway_messages::dsl as m;
        let db = app.db.clone();
        db.run(move |conn| Ok(m::gateway_messages.count().get_result(conn)?))
            .await
            .expect("count")
    };
    assert_eq!(messages, 5);
}

#[tokio::test]
async fn codes_are_kept_only_as_a_keyed_digest_and_a_sealed_copy_that_ends_with_the_verification() {
    let (app, dir) = spawn_gateway(|_| {}).await;
    let id = start(&app, sms_recovery()).await["id"]
        .as_str()
        .expect("id")
        .to_string();
    deliver(&app).await;
    let code = code_of(&delivered(dir.path())[0]);
    let row = |app: &TestApp| {
        let db = app.db.clone();
        let id = id.clone();
        async move {
            db.run(move |conn| {
                use gateway_verifications::dsl as v;
                Ok(v::gateway_verifications
                    .find(id)
                    .select((v::secret_digest, v::secret_sealed, v::destination))
                    .first::<(String, String, String)>(conn)?)
            })
            .await
            .expect("row")
        }
    };
    let (digest, sealed, _) = row(&app).await;
    assert!(
        digest.starts_with("d1:") && !digest.contains(&code),
        "{digest}"
    );
    assert!(
        sealed.starts_with("v1:") && !sealed.contains(&code),
        "{sealed}"
    );
    assert_eq!(check(&app, &id, &code).await.1["status"], "approved");
    let (_, sealed, _) = row(&app).await;
    assert_eq!(
        sealed, "",
        "the sealed copy is wiped once the verification ends"
    );
}

#[tokio::test]
async fn a_hundred_parallel_resends_are_held_to_the_destination_limit() {
    let (app, _dir) = spawn_gateway(|s| {
        s.gateway.verifications.resend_interval_seconds = 0;
        s.gateway.verifications.max_sends = 20;
        s.gateway.limits.destination.cooldown_seconds = 0;
        s.gateway.limits.destination.max_sends = 3;
        s.database.pool_size = 8;
    })
    .await;
    let id = start(&app, sms_recovery()).await["id"]
        .as_str()
        .expect("id")
        .to_string();
    let answers = futures_util::future::join_all((0..100).map(|_| resend(&app, &id, None))).await;
    let accepted = answers.iter().filter(|(s, _, _)| *s == 200).count();
    assert_eq!(
        accepted, 2,
        "3 sends per hour to one number, the first included"
    );
    for (status, body, retry_after) in answers.iter().filter(|(s, _, _)| *s != 200) {
        assert_eq!(
            (*status, error_code(body)),
            (429, "destination_window"),
            "{body}"
        );
        let seconds: u64 = retry_after
            .as_deref()
            .expect("Retry-After")
            .parse()
            .expect("seconds");
        assert!((3590..=3600).contains(&seconds), "{seconds}");
    }
    assert_eq!(
        get(&app, &id).await["sends"]
            .as_array()
            .expect("sends")
            .len(),
        3
    );
}

#[tokio::test]
async fn a_start_or_resend_over_a_limit_is_refused_with_retry_after_and_sends_nothing() {
    let (app, dir) = spawn_gateway(|s| {
        s.gateway.limits.destination.cooldown_seconds = 60;
        s.gateway.limits.identity.max_sends = 2;
        s.gateway.sms.allowed_countries = vec!["1".into()];
    })
    .await;
    let first = start(&app, sms_recovery()).await;
    // Another verification to the same number within the cooldown.
    let (status, body, retry_after) = post(&app, "/v1/verifications", Some(&sms_recovery())).await;
    assert_eq!(
        (status, error_code(&body)),
        (429, "destination_cooldown"),
        "{body}"
    );
    assert_eq!(body["error"]["field"], "to");
    assert_eq!(retry_after.as_deref(), Some("60"));
    // The verification's own interval (30 s) has passed, the destination's cooldown (60 s) has not.
    app.clock.advance(Duration::seconds(45));
    let id = first["id"].as_str().expect("id");
    let (status, body, retry_after) = resend(&app, id, None).await;
    assert_eq!(
        (status, error_code(&body)),
        (429, "destination_cooldown"),
        "{body}"
    );
    assert_eq!(retry_after.as_deref(), Some("15"));
    assert_eq!(
        get(&app, id).await["sends_left"],
        4,
        "a refused resend is not a send"
    );
    app.clock.advance(Duration::seconds(15));
    assert_eq!(resend(&app, id, None).await.0, 200);

    // Per identity: two starts for one identity to two numbers, a third is refused.
    for to in ["+14155550111", "+14155550112"] {
        start(
            &app,
            json!({"channel": "sms", "to": to, "purpose": "login", "identity_id": "id-1"}),
        )
        .await;
    }
    let (status, body, _) = post(
        &app,
        "/v1/verifications",
        Some(&json!({"channel": "sms", "to": "+14155550113", "purpose": "login", "identity_id": "id-1"})),
    )
    .await;
    assert_eq!(
        (status, error_code(&body)),
        (429, "identity_window"),
        "{body}"
    );
    assert_eq!(body["error"]["field"], "identity_id");

    // A country outside the allow-list is refused for good: 422, no Retry-After.
    let (status, body, retry_after) = post(
        &app,
        "/v1/verifications",
        Some(&json!({"channel": "sms", "to": "+34612345678", "purpose": "login"})),
    )
    .await;
    assert_eq!(
        (status, error_code(&body)),
        (422, "country_not_allowed"),
        "{body}"
    );
    assert!(retry_after.is_none());

    app.delivery.drain_at(app.clock.now()).await.expect("drain");
    // The resend canceled the first message, still queued: its resend and the two starts.
    assert_eq!(delivered(dir.path()).len(), 3);
}

#[tokio::test]
async fn three_gateway_instances_on_one_database_honour_one_limit() {
    let (app, _dir) = spawn_gateway(|s| {
        s.gateway.limits.destination.cooldown_seconds = 0;
        s.gateway.limits.destination.max_sends = 5;
    })
    .await;
    // Two more instances: each with its own connection pool and its own in-process front, as separate
    // processes would have.
    let mut urls = vec![app.gateway.clone()];
    for _ in 0..2 {
        let db = reclaim_common::Db::connect(&app.settings.database).expect("connect");
        let other = reclaim_gateway::Application::build_with_clock(
            &app.settings,
            db,
            reclaim_gateway::RunMode::ApiOnly,
            app.clock.clone(),
        )
        .await
        .expect("another gateway");
        urls.push(format!("http://127.0.0.1:{}", other.port()));
        tokio::spawn(other.run_until_stopped(reclaim_common::shutdown::Shutdown::default()));
    }
    let body = json!({"channel": "sms", "to": "+14155550100", "purpose": "login"});
    let answers = futures_util::future::join_all((0..30).map(|i| {
        let request = app
            .client
            .post(format!("{}/v1/verifications", urls[i % 3]))
            .bearer_auth(API_TOKEN)
            .json(&body);
        async move {
            let response = request.send().await.expect("request");
            let status = response.status().as_u16();
            let answer: Value = response.json().await.expect("json");
            (status, answer)
        }
    }))
    .await;
    let started = answers.iter().filter(|(s, _)| *s == 201).count();
    assert_eq!(
        started, 5,
        "5 sends per hour to one number, across all instances"
    );
    for (status, answer) in answers.iter().filter(|(s, _)| *s != 201) {
        assert_eq!(
            (*status, error_code(answer)),
            (429, "destination_window"),
            "{answer}"
        );
    }
}
