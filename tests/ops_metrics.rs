//! Operations: after real traffic through both services and the Kratos edge guard (messages sent, retried,
//! moved to a fallback channel and failed; a verification started, approved and then throttled; passwords
//! recorded and checked; a notice handed to the gateway; a KDF 503), both `/metrics` pass
//! `promtool check metrics`, and every metric the Grafana dashboard (`config/grafana/reclaim.json`) and the
//! alerting rules (`config/prometheus/alerts.yml`) name is in them. The guard runs inside the plugin process
//! (`plugin.kratos.guard.listen`), so its metrics are on the plugin's `/metrics`.

use crate::gateway_messages::{delivered, enqueue, get_message, spawn_gateway};
use crate::gateway_twilio_outbox::on_twilio;
use crate::plugin_passwords::fast_kdf;
use crate::support::plugin::{new_id, post_json};
use crate::support::twilio_faults::{FaultyTwilio, Reply};
use crate::support::upstream::Upstream;
use crate::support::{kratos, TestApp, API_TOKEN};
use chrono::{TimeDelta, Utc};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

const SMS_SID: &str = "SM0123456789abcdef0123456789abcdef";
const CALL_SID: &str = "CA0123456789abcdef0123456789abcdef";

/// The files whose metric names must exist, relative to the workspace root.
const QUERY_FILES: [&str; 2] = [
    "config/grafana/reclaim.json",
    "config/prometheus/alerts.yml",
];

async fn scrape(app: &TestApp, base: &str) -> String {
    let response = app
        .client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("scrape");
    assert_eq!(response.status(), 200);
    response.text().await.expect("text")
}

/// Queues an SMS code and drains at a clock moving 2 s a round until it leaves the queue.
async fn send_sms(app: &TestApp, extra: Value) -> Value {
    let mut body = json!({
        "channel": "sms", "to": "+14155550100", "template": "verification_code",
        "data": {"code": "482913"}, "expires_in": 1200,
    });
    if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        body.extend(extra.clone());
    }
    let id = enqueue(app, &body).await;
    let mut clock = Utc::now();
    for _ in 0..10 {
        app.delivery.drain_at(clock).await.expect("drain");
        let message = get_message(app, &id).await;
        if message["status"] != "queued" {
            return message;
        }
        clock += TimeDelta::seconds(2);
    }
    get_message(app, &id).await
}

async fn post_gateway(app: &TestApp, path: &str, body: Value) -> (u16, Value) {
    let response = app
        .client
        .post(app.gateway_url(path))
        .bearer_auth(API_TOKEN)
        .json(&body)
        .send()
        .await
        .expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// The six-digit code in the message the `file` provider wrote to `to`.
fn code_sent_to(dir: &Path, to: &str) -> String {
    let line = delivered(dir)
        .into_iter()
        .find(|line| line["to"] == to)
        .unwrap_or_else(|| panic!("no message to {to}"));
    let content = &line["content"];
    let text = content["text"]
        .as_str()
        .or_else(|| content["body"].as_str())
        .expect("a text part")
        .to_string();
    text.split(|c: char| !c.is_ascii_digit())
        .find(|run| run.len() == 6)
        .unwrap_or_else(|| panic!("no code in {text:?}"))
        .to_string()
}

/// `promtool check metrics` on `text`: panics with promtool's report when it finds a problem. Without
/// promtool: panics when `CI` is set, else returns false after printing a note.
fn promtool_check_metrics(service: &str, text: &str) -> bool {
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            assert!(
                std::env::var_os("CI").is_none(),
                "promtool is not installed, and CI must run it (Debian package `prometheus`; .ci/run installs it)"
            );
            eprintln!("NOTE: promtool is not installed; `promtool check metrics` skipped for the {service}");
            return false;
        }
        Err(e) => panic!("cannot run promtool: {e}"),
    };
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    let output = child.wait_with_output().expect("promtool");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success() && report.trim().is_empty(),
        "promtool check metrics found problems in the {service}'s /metrics ({}):\n{report}",
        output.status
    );
    true
}

/// Metric families in a scrape, by name, with their type.
fn families(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| {
            let mut parts = rest.split_whitespace();
            Some((parts.next()?.to_string(), parts.next()?.to_string()))
        })
        .collect()
}

/// Every `reclaim_…` identifier in a file.
fn referenced(text: &str) -> BTreeSet<String> {
    let bytes = text.as_bytes();
    let mut names = BTreeSet::new();
    let mut at = 0;
    while let Some(found) = text[at..].find("reclaim_") {
        let start = at + found;
        let preceded = start > 0 && {
            let c = bytes[start - 1];
            c.is_ascii_alphanumeric() || c == b'_'
        };
        let end = text[start..]
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .map_or(text.len(), |n| start + n);
        if !preceded {
            names.insert(text[start..end].to_string());
        }
        at = end;
    }
    names
}

/// Whether `name` is a scraped family, or the `_bucket`, `_sum` or `_count` series of a scraped histogram.
fn exists(name: &str, scraped: &[(String, String)]) -> bool {
    if scraped.iter().any(|(family, _)| family == name) {
        return true;
    }
    ["_bucket", "_sum", "_count"].iter().any(|suffix| {
        name.strip_suffix(suffix).is_some_and(|base| {
            scraped
                .iter()
                .any(|(family, kind)| family == base && (kind == "histogram" || kind == "summary"))
        })
    })
}

#[tokio::test]
async fn after_real_traffic_both_services_metrics_pass_promtool_and_hold_every_metric_the_dashboard_and_alerts_use(
) {
    let twilio = FaultyTwilio::start(vec![
        // A transient error, then sent: one retry.
        Reply::twilio_error(400, 30001),
        Reply::created(SMS_SID),
        // A permanent error, then the voice call: one fallback.
        Reply::twilio_error(400, 21614),
        Reply::created(CALL_SID),
        // A permanent error without a fallback: failed.
        Reply::twilio_error(400, 21614),
    ])
    .await;
    let upstream = Upstream::start().await;
    let kratos_url = upstream.url.clone();
    let (app, dir) = spawn_gateway(|s| {
        on_twilio(s, &twilio);
        s.gateway.retry.base_ms = 100;
        s.gateway.retry.max_ms = 1_000;
        fast_kdf(s);
        // One KDF slot, so the test can hold it and see the 503.
        s.plugin.history.max_concurrent_kdf = 1;
        s.plugin.history.max_queue_ms = 100;
        kratos::kratos_settings(s);
        if let Some(default) = s.plugin.policy.profiles.get_mut("default") {
            default.min_age_minutes = 0;
        }
        s.plugin.kratos.public_url = kratos_url;
        s.plugin.kratos.guard.listen = "127.0.0.1:0".into();
        s.plugin.notices.enabled = true;
        s.plugin.notices.poll_interval_ms = 60_000;
        s.plugin.notices.scan_interval_seconds = 86_400;
    })
    .await;

    // Delivery: a retry, a fallback and a failure on the real Twilio client; a code by email on the file
    // provider.
    let retried = send_sms(&app, json!({"fallback": []})).await;
    assert_eq!(retried["status"], "sent", "{retried}");
    let fell_back = send_sms(&app, json!({})).await;
    assert_eq!(
        (&fell_back["status"], &fell_back["channel"]),
        (&json!("sent"), &json!("voice")),
        "{fell_back}"
    );
    let failed = send_sms(&app, json!({"fallback": []})).await;
    assert_eq!(failed["status"], "failed", "{failed}");

    // A verification started, delivered and approved; another to the same address at once is throttled.
    let to = format!("ops-{}@example.com", &new_id()[..8]);
    let start = json!({"channel": "email", "to": to, "purpose": "verification"});
    let (status, view) = post_gateway(&app, "/v1/verifications", start.clone()).await;
    assert_eq!(status, 201, "{view}");
    let verification = view["id"].as_str().expect("id").to_string();
    app.delivery.drain_at(app.clock.now()).await.expect("drain");
    let code = code_sent_to(dir.path(), &to);
    let wrong = if code == "000000" { "111111" } else { "000000" };
    let (status, checked) = post_gateway(
        &app,
        &format!("/v1/verifications/{verification}/check"),
        json!({ "code": wrong }),
    )
    .await;
    assert_eq!((status, &checked["status"]), (200, &json!("pending")));
    let (status, checked) = post_gateway(
        &app,
        &format!("/v1/verifications/{verification}/check"),
        json!({ "code": code }),
    )
    .await;
    assert_eq!((status, &checked["status"]), (200, &json!("approved")));
    let (status, refused) = post_gateway(&app, "/v1/verifications", start).await;
    assert_eq!(
        (status, &refused["error"]["code"]),
        (429, &json!("destination_cooldown")),
        "{refused}"
    );

    // One canceled, to another address.
    let other = json!({"channel": "email", "to": format!("x{to}"), "purpose": "login"});
    let (status, view) = post_gateway(&app, "/v1/verifications", other).await;
    assert_eq!(status, 201, "{view}");
    let canceled = view["id"].as_str().expect("id");
    let (status, view) = post_gateway(
        &app,
        &format!("/v1/verifications/{canceled}/cancel"),
        json!({}),
    )
    .await;
    assert_eq!((status, &view["status"]), (200, &json!("canceled")));

    // One to an address no account has (nothing is sent), checked wrong until it runs out of checks.
    let unknown =
        json!({"channel": "email", "to": format!("y{to}"), "purpose": "login", "known": false});
    let (status, view) = post_gateway(&app, "/v1/verifications", unknown).await;
    assert_eq!(status, 201, "{view}");
    let unknown = view["id"].as_str().expect("id");
    let max_checks = app.settings.gateway.verifications.max_checks;
    for check in 1..=max_checks {
        let (status, view) = post_gateway(
            &app,
            &format!("/v1/verifications/{unknown}/check"),
            json!({"code": "123456"}),
        )
        .await;
        let expected = if check == max_checks {
            "max_checks_reached"
        } else {
            "pending"
        };
        assert_eq!((status, &view["status"]), (200, &json!(expected)), "{view}");
    }

    // Passwords: a first one (no notice), a change (one notice to the gateway), a reuse refused at the guard.
    let id = new_id();
    let email = format!("pw-{}@example.com", &id[..8]);
    for body in [
        json!({"identity_id": id, "password": "first secret", "email": email,
               "changed_at": (Utc::now() - TimeDelta::days(3)).to_rfc3339()}),
        json!({"identity_id": id, "password": "second secret"}),
    ] {
        let (status, answer) = post_json(&app, "/v1/passwords/record", body).await;
        assert_eq!(status, 200, "{answer}");
    }
    let mut plugin = String::new();
    for _ in 0..200 {
        app.notices.deliver_due().await.expect("deliver notices");
        plugin = scrape(&app, &app.plugin).await;
        if plugin.contains("reclaim_plugin_notices_total{") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert!(
        plugin
            .contains(r#"reclaim_plugin_notices_total{kind="password_changed",outcome="sent"} 1"#),
        "{plugin}"
    );
    let token = format!("token-{id}");
    upstream.add_session(
        &token,
        json!({"id": id, "schema_id": "default", "traits": {"email": email}, "metadata_public": null}),
        &["password"],
    );
    let guard = app.guard.as_deref().expect("the guard runs");
    let through = app
        .client
        .post(format!("{guard}/self-service/settings?flow={}", new_id()))
        .header("content-type", "application/json")
        .header("x-session-token", &token)
        .body(json!({"method": "password", "password": "first secret"}).to_string())
        .send()
        .await
        .expect("through the guard");
    assert_eq!(
        through.status(),
        200,
        "the stand-in answered through the guard"
    );

    // A check while the only KDF slot is held: 503.
    let (taken, slot_taken) = tokio::sync::oneshot::channel();
    let (release, released) = std::sync::mpsc::channel::<()>();
    let kdf = app.kdf.clone();
    let holder = tokio::spawn(async move {
        kdf.run(move || {
            let _ = taken.send(());
            let _ = released.recv();
        })
        .await
    });
    slot_taken
        .await
        .expect("the holding job runs in the only slot");
    let busy = app
        .client
        .post(app.plugin_url("/v1/passwords/check"))
        .bearer_auth(API_TOKEN)
        .json(&json!({"identity_id": id, "password": "third secret"}))
        .send()
        .await
        .expect("check");
    assert_eq!(busy.status(), 503);
    release.send(()).expect("release the slot");
    holder.await.expect("join").expect("the holding job ends");

    let gateway = scrape(&app, &app.gateway).await;
    let plugin = scrape(&app, &app.plugin).await;
    // The traffic shows in the counters it should move.
    for line in [
        r#"reclaim_gateway_retries_total{channel="sms"} 1"#,
        r#"reclaim_gateway_fallbacks_total{from="sms",to="voice"} 1"#,
        r#"reclaim_gateway_messages_total{channel="sms",outcome="permanent",provider="twilio"} 2"#,
        r#"reclaim_gateway_messages_total{channel="email",outcome="sent",provider="file"}"#,
        r#"reclaim_gateway_verifications_total{channel="email",outcome="started"} 2"#,
        r#"reclaim_gateway_verifications_total{channel="email",outcome="started_unknown"} 1"#,
        r#"reclaim_gateway_verifications_total{channel="email",outcome="max_checks_reached"} 1"#,
        r#"reclaim_gateway_verifications_total{channel="email",outcome="canceled"} 1"#,
        r#"reclaim_gateway_verifications_total{channel="email",outcome="approved"} 1"#,
        r#"reclaim_gateway_limit_refusals_total{reason="destination_cooldown",scope="destination"} 1"#,
    ] {
        assert!(gateway.contains(line), "{line} in the gateway's {gateway}");
    }
    // One wrong check on the first verification, all but the last on the unknown one.
    let wrong = format!(
        "reclaim_gateway_verifications_total{{channel=\"email\",outcome=\"wrong\"}} {}\n",
        max_checks
    );
    assert!(
        gateway.contains(&wrong),
        "{wrong} in the gateway's {gateway}"
    );
    for line in [
        "reclaim_plugin_kdf_rejections_total 1",
        "reclaim_plugin_kdf_slots 1",
        r#"reclaim_guard_verdicts_total{code="password_reused"} 1"#,
        r#"reclaim_guard_requests_total{outcome="refused",route="settings"} 1"#,
        r#"reclaim_plugin_decisions_total{code="password_reused",decision="refused"} 1"#,
    ] {
        assert!(plugin.contains(line), "{line} in the plugin's {plugin}");
    }

    let checked = promtool_check_metrics("gateway", &gateway);
    promtool_check_metrics("plugin", &plugin);
    if checked {
        eprintln!("promtool check metrics: both services clean");
    }

    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut scraped = families(&gateway);
    scraped.extend(families(&plugin));
    for file in QUERY_FILES {
        let text = std::fs::read_to_string(root.join(file)).expect(file);
        let names = referenced(&text);
        assert!(
            names.contains("reclaim_gateway_oldest_due_message_age_seconds")
                || names.contains("reclaim_gateway_messages_total"),
            "{file} names our metrics: {names:?}"
        );
        let missing: Vec<&String> = names.iter().filter(|n| !exists(n, &scraped)).collect();
        assert!(
            missing.is_empty(),
            "{file} uses metrics that neither service exposes after real traffic: {missing:?}"
        );
    }
}

#[test]
fn a_metric_name_that_no_service_exposes_is_reported_missing() {
    let scraped = families(
        "# HELP reclaim_a_seconds x\n# TYPE reclaim_a_seconds histogram\n\
         # HELP reclaim_b_total x\n# TYPE reclaim_b_total counter\n",
    );
    let names = referenced(
        r#"histogram_quantile(0.5, rate(reclaim_a_seconds_bucket[5m])) / rate(reclaim_b_total[5m])
           + reclaim_b_total_count + xreclaim_c + reclaim_gone_total"#,
    );
    assert_eq!(
        names.iter().map(String::as_str).collect::<Vec<_>>(),
        [
            "reclaim_a_seconds_bucket",
            "reclaim_b_total",
            "reclaim_b_total_count",
            "reclaim_gone_total"
        ]
    );
    let missing: Vec<&str> = names
        .iter()
        .filter(|n| !exists(n, &scraped))
        .map(String::as_str)
        .collect();
    assert_eq!(
        missing,
        ["reclaim_b_total_count", "reclaim_gone_total"],
        "a counter has no _count series, and a gone metric is missing"
    );
}

#[test]
fn the_dashboard_is_a_grafana_model_with_a_prometheus_datasource_variable_used_by_every_panel() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join(QUERY_FILES[0])).expect("dashboard");
    let dashboard: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    assert!(
        dashboard["schemaVersion"].as_u64().unwrap_or(0) >= 36,
        "schemaVersion"
    );
    let variables = dashboard["templating"]["list"]
        .as_array()
        .expect("templating");
    assert!(
        variables.iter().any(|v| v["name"] == "datasource"
            && v["type"] == "datasource"
            && v["query"] == "prometheus"),
        "a `datasource` variable of Prometheus data sources: {variables:?}"
    );
    let panels: Vec<&Value> = dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .filter(|p| p["type"] != "row")
        .collect();
    assert!(panels.len() >= 15, "{} panels", panels.len());
    for panel in panels {
        let title = &panel["title"];
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "{title}");
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title}");
        for target in targets {
            assert_eq!(target["datasource"]["uid"], "${datasource}", "{title}");
            let expr = target["expr"].as_str().unwrap_or_default();
            assert!(expr.contains("reclaim_"), "{title} queries our metrics");
            // Scrape configurations name jobs and instances as they like.
            assert!(
                !expr.contains("job=") && !expr.contains("instance="),
                "{title} filters by job or instance: {expr}"
            );
        }
    }
}
