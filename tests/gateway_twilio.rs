//! The Twilio provider against Twilio's own OpenAPI spec (served by Prism, which refuses any request that
//! violates it) and against a fault-injecting stand-in that checks what we send and how answers are sorted.

use crate::support::captured_logs::CapturedLogs;
use crate::support::prism::Prism;
use crate::support::twilio_faults::{FaultyTwilio, Recorded, Reply};
use base64::Engine;
use chrono::{Duration as Lifetime, Utc};
use reclaim_common::settings::TwilioSettings;
use reclaim_common::Secret;
use reclaim_gateway::providers::twilio::TwilioProvider;
use reclaim_gateway::providers::{Accepted, Channel, Content, Outgoing, Provider, SendError};
use std::time::Duration;

const ACCOUNT_SID: &str = "AC0123456789abcdef0123456789abcdef";
const AUTH_TOKEN: &str = "test-auth-token";
const API_KEY_SID: &str = "SKfedcba9876543210fedcba9876543210";
const MESSAGING_SERVICE_SID: &str = "MG00112233445566778899aabbccddeeff";
const FROM: &str = "+14155552671";
const TO: &str = "+34612345678";

fn settings(base_url: &str) -> TwilioSettings {
    TwilioSettings {
        base_url: base_url.into(),
        account_sid: ACCOUNT_SID.into(),
        auth_token: Secret::new(AUTH_TOKEN),
        from: FROM.into(),
        timeout_ms: 2_000,
        ..TwilioSettings::default()
    }
}

fn provider(settings: &TwilioSettings) -> TwilioProvider {
    let mut problems = Vec::new();
    settings.require_complete(&mut problems);
    settings.require_voice(&mut problems);
    assert!(
        problems.is_empty(),
        "incomplete test settings: {problems:?}"
    );
    TwilioProvider::new(settings).expect("provider")
}

fn sms(body: &str, expires_in: Option<Lifetime>) -> Outgoing {
    Outgoing {
        message_id: uuid::Uuid::now_v7(),
        attempt: 1,
        channel: Channel::Sms,
        to: TO.into(),
        content: Content::Sms { body: body.into() },
        locale: "es".into(),
        expires_at: expires_in.map(|lifetime| Utc::now() + lifetime),
        status_callback: Some("https://gateway.example.com/providers/twilio/status".into()),
    }
}

fn call(intro: &str, digits: &str, locale: &str) -> Outgoing {
    Outgoing {
        message_id: uuid::Uuid::now_v7(),
        attempt: 1,
        channel: Channel::Voice,
        to: TO.into(),
        content: Content::Voice {
            intro: intro.into(),
            digits: Some(digits.into()),
            outro: Some("Adiós.".into()),
        },
        locale: locale.into(),
        expires_at: Some(Utc::now() + Lifetime::minutes(20)),
        status_callback: Some("https://gateway.example.com/providers/twilio/status".into()),
    }
}

fn sid_of(outcome: Result<Accepted, SendError>, prefix: &str) -> String {
    let sid = outcome
        .expect("accepted")
        .provider_message_id
        .expect("a sid");
    assert!(
        sid.starts_with(prefix) && sid.len() == 34,
        "unexpected sid {sid}"
    );
    sid
}

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

#[tokio::test]
async fn an_sms_is_accepted_by_twilios_spec_mock_with_a_message_sid() {
    let prism = Prism::start_twilio();
    let provider = provider(&settings(&prism.url));
    let outcome = provider
        .send(&sms("Tu código es 123456", Some(Lifetime::minutes(20))))
        .await;
    sid_of(outcome, "SM");
    assert_eq!(provider.name(), "twilio");
}

#[tokio::test]
async fn an_sms_through_a_messaging_service_with_an_api_key_is_accepted_by_the_spec_mock() {
    let prism = Prism::start_twilio();
    let settings = TwilioSettings {
        api_key_sid: API_KEY_SID.into(),
        api_key_secret: Secret::new("api-key-secret"),
        messaging_service_sid: MESSAGING_SERVICE_SID.into(),
        ..settings(&prism.url)
    };
    let outcome = provider(&settings)
        .send(&sms("Your code is 123456", None))
        .await;
    sid_of(outcome, "SM");
}

#[tokio::test]
async fn a_voice_call_with_inline_twiml_is_accepted_by_the_spec_mock_with_a_call_sid() {
    let prism = Prism::start_twilio();
    let outcome = provider(&settings(&prism.url))
        .send(&call("Su código es", "482913", "es"))
        .await;
    sid_of(outcome, "CA");
}

#[tokio::test]
async fn the_spec_mock_refuses_requests_that_violate_twilios_spec() {
    let prism = Prism::start_twilio();
    // Our own request with a malformed account SID in the path: Prism must refuse it, or the accepted
    // requests above would prove nothing.
    let bad = TwilioSettings {
        account_sid: "AC-not-a-valid-sid".into(),
        ..settings(&prism.url)
    };
    let outcome = TwilioProvider::new(&bad)
        .expect("provider")
        .send(&sms("Your code is 123456", None))
        .await;
    match outcome {
        Err(SendError::Transient { code, .. }) => assert_eq!(code.as_deref(), Some("http_422")),
        Err(other) => panic!("expected Prism's 422, got {other:?}"),
        Ok(_) => panic!("Prism accepted a request that violates the spec"),
    }
    let response = reqwest::Client::new()
        .post(format!(
            "{}/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json",
            prism.url
        ))
        .basic_auth(ACCOUNT_SID, Some(AUTH_TOKEN))
        .form(&[("Body", "no recipient"), ("ValidityPeriod", "soon")])
        .send()
        .await
        .expect("prism answers");
    assert_eq!(response.status().as_u16(), 422);
    let problem: serde_json::Value = response.json().await.expect("problem document");
    let findings = problem["validation"].to_string();
    assert!(findings.contains("'To'"), "{findings}");
    assert!(findings.contains("ValidityPeriod"), "{findings}");
}

async fn sent_through_stand_in(
    settings: impl FnOnce(&mut TwilioSettings),
    message: Outgoing,
) -> Recorded {
    let twilio =
        FaultyTwilio::start(vec![Reply::created("SM0123456789abcdef0123456789abcdef")]).await;
    let mut chosen = self::settings(&twilio.url);
    settings(&mut chosen);
    provider(&chosen).send(&message).await.expect("accepted");
    let mut requests = twilio.requests();
    assert_eq!(requests.len(), 1);
    requests.remove(0)
}

#[tokio::test]
async fn an_sms_carries_sender_body_callback_and_a_validity_period_capped_by_the_code_expiry() {
    let request = sent_through_stand_in(
        |_| {},
        sms("Tu código es 123456", Some(Lifetime::seconds(600))),
    )
    .await;
    assert_eq!(request.method, "POST");
    assert_eq!(
        request.path,
        format!("/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json")
    );
    assert_eq!(
        request.header("authorization"),
        Some(basic(ACCOUNT_SID, AUTH_TOKEN).as_str())
    );
    assert_eq!(request.field("To"), Some(TO));
    assert_eq!(request.field("From"), Some(FROM));
    assert_eq!(request.field("MessagingServiceSid"), None);
    assert_eq!(request.field("Body"), Some("Tu código es 123456"));
    assert_eq!(
        request.field("StatusCallback"),
        Some("https://gateway.example.com/providers/twilio/status")
    );
    let validity: u32 = request
        .field("ValidityPeriod")
        .and_then(|v| v.parse().ok())
        .expect("ValidityPeriod");
    assert!((598..=600).contains(&validity), "{validity}");
}

#[tokio::test]
async fn the_configured_validity_period_applies_when_it_is_shorter_than_the_code() {
    let request = sent_through_stand_in(
        |s| s.max_validity_period_seconds = 300,
        sms("code", Some(Lifetime::minutes(20))),
    )
    .await;
    assert_eq!(request.field("ValidityPeriod"), Some("300"));
}

#[tokio::test]
async fn an_api_key_replaces_the_auth_token_in_basic_auth() {
    let request = sent_through_stand_in(
        |s| {
            s.api_key_sid = API_KEY_SID.into();
            s.api_key_secret = Secret::new("api-key-secret");
            s.messaging_service_sid = MESSAGING_SERVICE_SID.into();
        },
        sms("code", None),
    )
    .await;
    assert_eq!(
        request.path,
        format!("/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json")
    );
    assert_eq!(
        request.header("authorization"),
        Some(basic(API_KEY_SID, "api-key-secret").as_str())
    );
    assert_eq!(
        request.field("MessagingServiceSid"),
        Some(MESSAGING_SERVICE_SID)
    );
    assert_eq!(request.field("From"), None);
    assert_eq!(request.field("ValidityPeriod"), Some("36000"));
}

#[tokio::test]
async fn a_call_reads_the_digits_twice_in_the_recipients_language_with_escaped_text() {
    let request = sent_through_stand_in(
        |s| {
            s.voice_from = "+14155550123".into();
            s.voice_name = "Polly.Lucia".into();
        },
        call("Código <de> Reclaim & más", "4829", "es-ES"),
    )
    .await;
    assert_eq!(
        request.path,
        format!("/2010-04-01/Accounts/{ACCOUNT_SID}/Calls.json")
    );
    assert_eq!(request.field("From"), Some("+14155550123"));
    assert_eq!(request.field("To"), Some(TO));
    let twiml = request.field("Twiml").expect("inline TwiML");
    let say = |text: &str| format!(r#"<Say language="es-ES" voice="Polly.Lucia">{text}</Say>"#);
    assert!(
        twiml.starts_with(&format!(
            "<Response>{}",
            say("Código &lt;de&gt; Reclaim &amp; más")
        )),
        "{twiml}"
    );
    let pause = r#"<Pause length="1"/>"#;
    let digits = ["4", "8", "2", "9"].map(say).join(pause);
    assert_eq!(twiml.matches(&digits).count(), 2, "{twiml}");
    assert!(
        twiml.ends_with(&format!("{}</Response>", say("Adiós."))),
        "{twiml}"
    );
}

/// Sends one SMS to a stand-in scripted with `replies` and returns the outcome and the requests it saw.
async fn outcome_of(
    replies: Vec<Reply>,
    timeout_ms: u64,
) -> (Result<Accepted, SendError>, Vec<Recorded>) {
    let twilio = FaultyTwilio::start(replies).await;
    let settings = TwilioSettings {
        timeout_ms,
        ..settings(&twilio.url)
    };
    let outcome = provider(&settings)
        .send(&sms("Your code is 123456", Some(Lifetime::minutes(20))))
        .await;
    (outcome, twilio.requests())
}

fn transient(outcome: Result<Accepted, SendError>) -> (String, Option<Duration>) {
    match outcome {
        Err(SendError::Transient {
            code, retry_after, ..
        }) => (code.unwrap_or_default(), retry_after),
        Err(other) => panic!("expected a transient failure, got {other:?}"),
        Ok(_) => panic!("expected a transient failure, got acceptance"),
    }
}

fn permanent(outcome: Result<Accepted, SendError>) -> (String, String) {
    match outcome {
        Err(SendError::Permanent { code, message }) => (code.unwrap_or_default(), message),
        Err(other) => panic!("expected a permanent failure, got {other:?}"),
        Ok(_) => panic!("expected a permanent failure, got acceptance"),
    }
}

#[tokio::test]
async fn a_429_is_transient_and_honours_retry_after_in_seconds() {
    let reply = Reply::twilio_error(429, 20429).header("Retry-After", "7");
    let (code, retry_after) = transient(outcome_of(vec![reply], 2_000).await.0);
    assert_eq!(code, "20429");
    assert_eq!(retry_after, Some(Duration::from_secs(7)));
}

#[tokio::test]
async fn a_503_is_transient_and_honours_retry_after_as_an_http_date() {
    let later = std::time::SystemTime::now() + Duration::from_secs(120);
    let reply = Reply::new(503, "Service Unavailable")
        .header("Retry-After", &httpdate::fmt_http_date(later));
    let (code, retry_after) = transient(outcome_of(vec![reply], 2_000).await.0);
    assert_eq!(code, "http_503");
    let retry_after = retry_after.expect("Retry-After honoured");
    assert!(
        (Duration::from_secs(115)..=Duration::from_secs(120)).contains(&retry_after),
        "{retry_after:?}"
    );
}

#[tokio::test]
async fn server_errors_are_transient_even_with_a_permanent_looking_code() {
    for status in [500, 502, 504] {
        let (code, retry_after) = transient(
            outcome_of(vec![Reply::twilio_error(status, 21211)], 2_000)
                .await
                .0,
        );
        assert_eq!(code, "21211", "status {status}");
        assert_eq!(retry_after, None);
    }
}

#[tokio::test]
async fn an_answer_slower_than_the_timeout_is_transient() {
    let slow = Reply::created("SM0123456789abcdef0123456789abcdef").after(Duration::from_secs(3));
    let (outcome, requests) = outcome_of(vec![slow], 300).await;
    assert_eq!(transient(outcome).0, "timeout");
    assert_eq!(requests.len(), 1);
}

#[tokio::test]
async fn a_refused_connection_is_transient() {
    let closed = crate::support::ports::closed_port();
    let settings = settings(&format!("http://{}", closed.addr()));
    let outcome = provider(&settings).send(&sms("code", None)).await;
    assert_eq!(transient(outcome).0, "connection");
}

#[tokio::test]
async fn garbage_answers_are_transient_failures_not_crashes() {
    let garbage = [
        Reply::new(400, "<html><body>Bad Request</body></html>"),
        Reply::new(418, "\u{0}\u{1}not json at all"),
        Reply::new(200, "<html>a captive portal</html>"),
        Reply::new(201, r#"{"status": "queued"}"#),
        Reply::new(201, r#"{"sid": 42}"#),
    ];
    let expected = [
        "http_400",
        "http_418",
        "invalid_response",
        "invalid_response",
        "invalid_response",
    ];
    for (reply, expected) in garbage.into_iter().zip(expected) {
        let body = reply.body.clone();
        let (code, _) = transient(outcome_of(vec![reply], 2_000).await.0);
        assert_eq!(code, expected, "answer {body:?}");
    }
}

#[tokio::test]
async fn documented_permanent_twilio_codes_are_permanent_and_their_numbers_masked() {
    for twilio_code in [21211, 21408, 21610, 21612, 21614] {
        let (code, message) = permanent(
            outcome_of(vec![Reply::twilio_error(400, twilio_code)], 2_000)
                .await
                .0,
        );
        assert_eq!(code, twilio_code.to_string());
        assert!(
            message.contains(&format!("Error {twilio_code}")),
            "{message}"
        );
        assert!(
            !message.contains("5005550001"),
            "unmasked number: {message}"
        );
    }
}

#[tokio::test]
async fn queue_overflow_and_unknown_twilio_codes_are_transient() {
    for twilio_code in [30001, 20429, 99999] {
        let (code, _) = transient(
            outcome_of(vec![Reply::twilio_error(400, twilio_code)], 2_000)
                .await
                .0,
        );
        assert_eq!(code, twilio_code.to_string());
    }
}

#[tokio::test]
async fn an_expired_message_is_refused_without_calling_twilio() {
    let twilio =
        FaultyTwilio::start(vec![Reply::created("SM0123456789abcdef0123456789abcdef")]).await;
    let provider = provider(&settings(&twilio.url));
    let (code, _) = permanent(
        provider
            .send(&sms("code", Some(Lifetime::seconds(-1))))
            .await,
    );
    assert_eq!(code, "expired");
    let mut expired_call = call("Your code is", "1234", "en");
    expired_call.expires_at = Some(Utc::now() - Lifetime::seconds(5));
    assert_eq!(permanent(provider.send(&expired_call).await).0, "expired");
    assert!(twilio.requests().is_empty());
}

#[tokio::test]
async fn email_and_mismatched_content_are_refused_as_unsupported() {
    let twilio =
        FaultyTwilio::start(vec![Reply::created("SM0123456789abcdef0123456789abcdef")]).await;
    let provider = provider(&settings(&twilio.url));
    let mut email = sms("code", None);
    email.channel = Channel::Email;
    email.content = Content::Email {
        subject: "Your code".into(),
        text: "123456".into(),
        html: None,
    };
    assert_eq!(
        permanent(provider.send(&email).await).0,
        "unsupported_channel"
    );
    let mut mismatched = sms("code", None);
    mismatched.channel = Channel::Voice;
    assert_eq!(
        permanent(provider.send(&mismatched).await).0,
        "unsupported_channel"
    );
    assert!(twilio.requests().is_empty());
}

#[tokio::test]
async fn logs_name_the_message_but_never_the_code_the_credentials_or_the_full_number() {
    let logs = CapturedLogs::default();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter("reclaim_gateway=trace")
        .with_writer(logs.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let twilio = FaultyTwilio::start(vec![
        Reply::created("SM0123456789abcdef0123456789abcdef"),
        Reply::twilio_error(400, 21211),
    ])
    .await;
    let provider = provider(&settings(&twilio.url));
    let message = sms("Your code is 975318", Some(Lifetime::minutes(20)));
    let message_id = message.message_id;
    provider.send(&message).await.expect("accepted");
    let spoken = call("Your code is", "864207", "en");
    permanent(provider.send(&spoken).await);

    let text = String::from_utf8(logs.0.lock().expect("lock").clone()).expect("utf-8");
    assert!(text.contains("accepted by Twilio"), "{text}");
    assert!(text.contains("Twilio failed permanently"), "{text}");
    assert!(text.contains(&message_id.to_string()), "{text}");
    assert!(
        text.contains(&reclaim_common::secret::mask_address(TO)),
        "{text}"
    );
    let credentials = basic(ACCOUNT_SID, AUTH_TOKEN);
    for secret in [
        "975318",
        "864207",
        "8 6 4",
        AUTH_TOKEN,
        credentials.trim_start_matches("Basic "),
        TO,
        "5005550001",
    ] {
        assert!(!text.contains(secret), "logs contain {secret:?}:\n{text}");
    }
}

#[tokio::test]
async fn a_spoken_message_over_twilios_twiml_limit_or_without_a_caller_id_is_refused_unsent() {
    let twilio =
        FaultyTwilio::start(vec![Reply::created("CA0123456789abcdef0123456789abcdef")]).await;
    let long = call(&"Your code follows. ".repeat(250), "123456", "en");
    assert_eq!(
        permanent(provider(&settings(&twilio.url)).send(&long).await).0,
        "twiml_too_long"
    );
    let sms_only = TwilioSettings {
        from: String::new(),
        messaging_service_sid: MESSAGING_SERVICE_SID.into(),
        ..settings(&twilio.url)
    };
    let provider = TwilioProvider::new(&sms_only).expect("provider");
    let (code, message) = permanent(provider.send(&call("Your code is", "123456", "en")).await);
    assert_eq!(code, "not_configured");
    assert!(message.contains("gateway.twilio.voice_from"), "{message}");
    assert!(twilio.requests().is_empty());
}

/// The whole path: `POST /v1/messages` → outbox → worker → Twilio client → Prism serving Twilio's spec.
#[tokio::test]
async fn queued_sms_and_voice_messages_are_delivered_through_the_spec_validated_twilio_mock() {
    let prism = Prism::start_twilio();
    let (app, _dir) = crate::gateway_messages::spawn_gateway(|s| {
        s.gateway.public_url = "https://gateway.example.test".into();
        s.gateway.twilio = settings(&prism.url);
        s.gateway.channels.sms.provider = reclaim_common::settings::ProviderKind::Twilio;
        s.gateway.channels.voice.provider = reclaim_common::settings::ProviderKind::Twilio;
    })
    .await;
    let mut ids = Vec::new();
    for channel in ["sms", "voice"] {
        let body = serde_json::json!({
            "channel": channel, "to": TO, "template": "recovery_code", "locale": "es",
            "data": {"code": "482913"}, "expires_in": 600,
        });
        ids.push(crate::gateway_messages::enqueue(&app, &body).await);
    }
    assert_eq!(app.delivery.drain().await.expect("drain"), 2);
    for (id, prefix) in ids.iter().zip(["SM", "CA"]) {
        let message = crate::gateway_messages::get_message(&app, id).await;
        assert_eq!(message["status"], "sent", "{message}\n{}", prism.log());
        assert_eq!(message["provider"], "twilio");
        assert!(
            message["provider_message_id"]
                .as_str()
                .is_some_and(|sid| sid.starts_with(prefix)),
            "{message}"
        );
    }
}
