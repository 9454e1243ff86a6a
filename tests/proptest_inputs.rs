//! Property test over the HTTP inputs of both services: the generic plugin API (`/v1/passwords/*`,
//! `/v1/identities/{id}/password`, `/admin/identities/*`) and the gateway's `/v1/messages`, driven with
//! generated JSON bodies (shaped like the real ones, with any value in any field), raw bytes, headers and path
//! segments. Whatever arrives, the answer is never a 5xx, and every 4xx carries the documented error body
//! `{"error": {"code", "message", "field"?}}`.
//!
//! One app serves all cases; 256 cases per endpoint family keep the test well under a minute in debug.

use crate::plugin_passwords::fast_kdf;
use crate::support::{spawn_app_in, TestApp, API_TOKEN};
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use reclaim_common::settings::{ExpiryMode, ProfileSettings};
use reclaim_gateway::RunMode;
use serde_json::{Map, Value};

const CASES: u32 = 256;

/// One generated request.
#[derive(Debug, Clone)]
struct Request {
    method: reqwest::Method,
    path: String,
    body: Vec<u8>,
    headers: Vec<(String, Vec<u8>)>,
    /// `None` = no `Authorization` header; otherwise its value.
    authorization: Option<Vec<u8>>,
}

/// Any JSON value, nested a few levels.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        any::<String>().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(Value::Array),
            btree_map(any::<String>(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A string that is sometimes plausible, sometimes anything, sometimes very long.
fn text(plausible: &'static [&'static str]) -> BoxedStrategy<Value> {
    prop_oneof![
        40 => proptest::sample::select(plausible).prop_map(Value::from),
        2 => any::<String>().prop_map(Value::String),
        1 => (1usize..5000).prop_map(|n| Value::String("x".repeat(n))),
        1 => any_json(),
    ]
    .boxed()
}

/// Times anywhere in chrono's range (far past, far future), written as chrono writes them, or junk.
fn timestamp() -> BoxedStrategy<Value> {
    let min = chrono::DateTime::<chrono::Utc>::MIN_UTC.timestamp();
    let max = chrono::DateTime::<chrono::Utc>::MAX_UTC.timestamp();
    prop_oneof![
        2 => (-400i64 * 86_400..=86_400).prop_map(|ago| {
            let at = chrono::Utc::now() + chrono::TimeDelta::seconds(ago);
            Value::String(at.to_rfc3339())
        }),
        3 => (min..=max).prop_map(|s| {
            chrono::DateTime::from_timestamp(s, 0)
                .map_or(Value::Null, |t| Value::String(t.to_rfc3339()))
        }),
        2 => proptest::sample::select(&[
            "0001-01-01T00:00:00Z",
            "1900-01-01T00:00:00Z",
            "9999-12-31T23:59:59Z",
            "+262142-12-31T23:59:59Z",
            "-262143-01-01T00:00:00Z",
            "2026-02-30T00:00:00Z",
            "yesterday",
        ][..])
        .prop_map(Value::from),
        1 => any_json(),
    ]
    .boxed()
}

/// Huge, negative, fractional and ordinary numbers, or anything.
fn number() -> BoxedStrategy<Value> {
    prop_oneof![
        2 => any::<u64>().prop_map(Value::from),
        1 => any::<i64>().prop_map(Value::from),
        1 => (0u64..100_000).prop_map(Value::from),
        1 => proptest::sample::select(&[0u64, 1, 60, 86_400, u64::MAX][..]).prop_map(Value::from),
        1 => any_json(),
    ]
    .boxed()
}

/// An object with each known field present or not, plus sometimes a field nobody knows.
fn object(fields: Vec<(&'static str, BoxedStrategy<Value>)>) -> BoxedStrategy<Value> {
    let parts: Vec<BoxedStrategy<Option<(String, Value)>>> = fields
        .into_iter()
        .map(|(name, values)| {
            proptest::option::weighted(0.95, values.prop_map(move |v| (name.to_string(), v)))
                .boxed()
        })
        .collect();
    (
        parts,
        proptest::option::weighted(0.1, (any::<String>(), any_json())),
    )
        .prop_map(|(present, extra)| {
            let mut map: Map<String, Value> = present.into_iter().flatten().collect();
            if let Some((key, value)) = extra {
                map.insert(key, value);
            }
            Value::Object(map)
        })
        .boxed()
}

/// A body: the shaped JSON most of the time, else any JSON, else raw bytes (broken JSON, bad UTF-8).
fn body(shaped: BoxedStrategy<Value>) -> BoxedStrategy<Vec<u8>> {
    prop_oneof![
        12 => shaped.prop_map(|v| serde_json::to_vec(&v).unwrap_or_default()),
        1 => any_json().prop_map(|v| serde_json::to_vec(&v).unwrap_or_default()),
        1 => vec(any::<u8>(), 0..64),
    ]
    .boxed()
}

/// Bytes a header value may hold (visible ASCII, space, tab and obs-text).
fn header_value() -> BoxedStrategy<Vec<u8>> {
    prop_oneof![
        3 => "[ -~]{0,40}".prop_map(String::into_bytes),
        1 => vec(
            prop_oneof![Just(b'\t'), 0x20u8..=0x7e, 0x80u8..=0xff],
            0..300
        ),
    ]
    .boxed()
}

fn headers() -> BoxedStrategy<Vec<(String, Vec<u8>)>> {
    let named = |name: &'static str, plausible: &'static str| {
        let value = prop_oneof![4 => plausible.prop_map(String::into_bytes), 1 => header_value()];
        proptest::option::weighted(0.4, value).prop_map(move |v| v.map(|v| (name.to_string(), v)))
    };
    let content_type = proptest::option::weighted(
        0.2,
        prop_oneof![
            Just(b"text/plain".to_vec()),
            Just(b"application/x-www-form-urlencoded".to_vec()),
            header_value(),
        ],
    )
    .prop_map(|v| v.map(|v| ("Content-Type".to_string(), v)));
    let extra = proptest::option::weighted(0.3, ("x-[a-z0-9-]{1,20}", header_value()));
    (
        named("Idempotency-Key", "[a-zA-Z0-9-]{1,40}"),
        named("Accept-Language", "(es|en|fr)(-[A-Z]{2})?(;q=0\\.[0-9])?"),
        content_type,
        extra,
    )
        .prop_map(|(key, language, content_type, extra)| {
            [key, language, content_type, extra]
                .into_iter()
                .flatten()
                .collect()
        })
        .boxed()
}

/// Mostly the right token; sometimes none, a wrong one, or junk.
fn authorization() -> BoxedStrategy<Option<Vec<u8>>> {
    prop_oneof![
        40 => Just(Some(format!("Bearer {API_TOKEN}").into_bytes())),
        1 => Just(None),
        1 => Just(Some(b"Bearer wrong".to_vec())),
        1 => header_value().prop_map(Some),
    ]
    .boxed()
}

/// A path segment: plausible ids, anything (percent-encoded), or very long.
fn segment() -> BoxedStrategy<String> {
    prop_oneof![
        3 => "[a-zA-Z0-9_.-]{1,20}",
        3 => any::<String>().prop_map(|s| url::form_urlencoded::byte_serialize(s.as_bytes()).collect()),
        1 => (200usize..2000).prop_map(|n| "i".repeat(n)),
    ]
    .boxed()
}

fn identity_fields() -> Vec<(&'static str, BoxedStrategy<Value>)> {
    vec![
        ("identity_id", text(&["u1", "alice", "", " ", "a/b"])),
        ("password", text(&["correct horse", "", "p"])),
        ("schema_id", text(&["default", "staff"])),
        (
            "metadata",
            prop_oneof![
                3 => btree_map("[a-z]{1,8}", any::<String>().prop_map(Value::String), 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
                1 => any_json(),
            ]
            .boxed(),
        ),
    ]
}

fn plugin_request() -> impl Strategy<Value = Request> {
    let check = {
        let mut fields = identity_fields();
        fields.push(("context", text(&["voluntary", "recovery", "forced"])));
        fields.push(("profile", text(&["default", "staff", "nope"])));
        body(object(fields))
            .prop_map(|b| (reqwest::Method::POST, "/v1/passwords/check".to_string(), b))
    };
    let record = {
        let mut fields = identity_fields();
        fields.push(("changed_at", timestamp()));
        fields.push(("reason", text(&["voluntary", "recovery", "forced"])));
        fields.push(("email", text(&["a@example.com", "not an address"])));
        fields.push(("phone", text(&["+14155550100", "12"])));
        body(object(fields))
            .prop_map(|b| (reqwest::Method::POST, "/v1/passwords/record".to_string(), b))
    };
    let by_id = (
        proptest::sample::select(
            &[
                ("GET", "/v1/identities/{}/password"),
                ("POST", "/admin/identities/{}/force-change"),
                ("POST", "/admin/identities/{}/compromised"),
                ("DELETE", "/admin/identities/{}"),
            ][..],
        ),
        segment(),
        body(object(vec![(
            "reason",
            text(&["admin", "compromised", "recovery"]),
        )])),
    )
        .prop_map(|((method, path), id, body)| {
            let method =
                reqwest::Method::from_bytes(method.as_bytes()).unwrap_or(reqwest::Method::GET);
            (method, path.replace("{}", &id), body)
        });
    (
        prop_oneof![check, record, by_id],
        headers(),
        authorization(),
    )
        .prop_map(|((method, path, body), headers, authorization)| Request {
            method,
            path,
            body,
            headers,
            authorization,
        })
}

fn gateway_request() -> impl Strategy<Value = Request> {
    let channel = || text(&["email", "sms", "voice", "fax"]);
    let to = || {
        text(&[
            "+14155550100",
            "user@example.com",
            "+1",
            "@",
            "+999999999999999",
        ])
    };
    let fallback_step = object(vec![("channel", channel()), ("to", to())]);
    // Channel and address mostly fit each other, so that many requests get past them to the rest.
    let addressed = prop_oneof![
        3 => Just(("email", "user@example.com")),
        3 => proptest::sample::select(&[("sms", "+14155550100"), ("voice", "+442071838750")][..]),
        2 => Just(("", "")),
    ];
    let rest = object(vec![
        (
            "template",
            text(&[
                "recovery_code",
                "recovery_link",
                "verification_code",
                "password_changed",
                "../x",
            ]),
        ),
        (
            "locale",
            text(&["en", "es", "es-ES", "zz", "en-US-x-private"]),
        ),
        (
            "data",
            prop_oneof![
                4 => object(vec![
                    ("code", text(&["123456", "0000"])),
                    ("link", text(&["https://example.com/recover?token=abc"])),
                    ("ttl_minutes", number()),
                ]),
                1 => any_json(),
            ]
            .boxed(),
        ),
        (
            "expires_in",
            prop_oneof![2 => (1u64..=604_800).prop_map(Value::from), 1 => number()].boxed(),
        ),
        (
            "fallback",
            prop_oneof![
                4 => Just(Value::Array(Vec::new())),
                2 => vec(fallback_step, 0..3).prop_map(Value::Array),
                1 => any_json(),
            ]
            .boxed(),
        ),
    ]);
    let message = (addressed, channel(), to(), rest)
        .prop_map(|((channel, to), any_channel, any_to, mut message)| {
            if let Value::Object(fields) = &mut message {
                // The empty pair stands for "anything, fitting or not".
                let (channel, to) = if channel.is_empty() {
                    (any_channel, any_to)
                } else {
                    (Value::from(channel), Value::from(to))
                };
                fields.insert("channel".into(), channel);
                fields.insert("to".into(), to);
            }
            message
        })
        .boxed();
    let post = body(message).prop_map(|b| (reqwest::Method::POST, "/v1/messages".to_string(), b));
    let get = segment().prop_map(|id| {
        (
            reqwest::Method::GET,
            format!("/v1/messages/{id}"),
            Vec::new(),
        )
    });
    (prop_oneof![4 => post, 1 => get], headers(), authorization()).prop_map(
        |((method, path, body), headers, authorization)| Request {
            method,
            path,
            body,
            headers,
            authorization,
        },
    )
}

/// Sends `request` to `base` and checks the answer: below 500, and every 4xx in the error shape;
/// `Ok(true)` when it was a success (2xx).
async fn send_and_judge(
    app: &TestApp,
    base: &str,
    request: Request,
) -> Result<bool, TestCaseError> {
    let mut builder = app
        .client
        .request(request.method.clone(), format!("{base}{}", request.path))
        .header("Content-Type", "application/json");
    for (name, value) in &request.headers {
        builder = builder.header(name.as_str(), value.as_slice());
    }
    if let Some(authorization) = &request.authorization {
        builder = builder.header("Authorization", authorization.as_slice());
    }
    let response = builder
        .body(request.body.clone())
        .send()
        .await
        .map_err(|e| TestCaseError::fail(format!("no answer: {e}")))?;
    let status = response.status();
    let bytes = response
        .bytes()
        .await
        .map_err(|e| TestCaseError::fail(format!("no body: {e}")))?;
    let text = String::from_utf8_lossy(&bytes);
    prop_assert!(
        status.as_u16() < 500,
        "{} {} answered {status}: {text}",
        request.method,
        request.path
    );
    if status.is_client_error() {
        let body: Value = serde_json::from_slice(&bytes)
            .map_err(|e| TestCaseError::fail(format!("{status} body is not JSON ({e}): {text}")))?;
        let error = &body["error"];
        prop_assert!(
            error["code"].is_string(),
            "{status} without error.code: {text}"
        );
        prop_assert!(
            error["message"].is_string(),
            "{status} without error.message: {text}"
        );
        prop_assert!(
            error.get("field").is_none_or(Value::is_string),
            "{status} with a non-string error.field: {text}"
        );
        let keys: Vec<&String> = error
            .as_object()
            .map(|o| o.keys().collect())
            .unwrap_or_default();
        prop_assert!(
            keys.iter()
                .all(|k| ["code", "message", "field"].contains(&k.as_str())),
            "{status} with unexpected error keys: {text}"
        );
    }
    Ok(status.is_success())
}

fn run(
    name: &str,
    strategy: impl Strategy<Value = Request>,
    app: &TestApp,
    base: &str,
    rt: &tokio::runtime::Runtime,
) {
    let mut runner = TestRunner::new(Config {
        cases: CASES,
        failure_persistence: None,
        ..Config::default()
    });
    let successes = std::cell::Cell::new(0u32);
    let result = runner.run(&strategy, |request| {
        let success = rt.block_on(send_and_judge(app, base, request))?;
        successes.set(successes.get() + u32::from(success));
        Ok(())
    });
    if let Err(failure) = result {
        panic!("{name}: {failure}");
    }
    eprintln!(
        "{name}: {} of {CASES} generated requests succeeded",
        successes.get()
    );
    // Generated requests that all fail validation would never reach the code behind it.
    assert!(
        successes.get() >= CASES / 64,
        "{name}: only {} of {CASES} requests succeeded",
        successes.get()
    );
}

#[test]
fn arbitrary_requests_never_get_a_server_error_and_every_4xx_has_the_error_shape() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    // Every date rule on, so that request times meet all the policy's arithmetic.
    let app = rt.block_on(spawn_app_in(RunMode::ApiOnly, |settings| {
        fast_kdf(settings);
        settings.plugin.policy.profiles.insert(
            "default".into(),
            ProfileSettings {
                expiry: ExpiryMode::MaxAge,
                max_age_days: 90,
                warn_before_days: 14,
                reuse_window_days: 365,
                min_age_minutes: 60,
                grace_logins: 2,
                ..ProfileSettings::default()
            },
        );
    }));
    run("plugin API", plugin_request(), &app, &app.plugin, &rt);
    run(
        "gateway messages",
        gateway_request(),
        &app,
        &app.gateway,
        &rt,
    );
}
