//! Gateway: the retention janitor deletes finished messages with their attempts after
//! `gateway.retention.message_days` and idempotency records after `gateway.retention.idempotency_hours`,
//! never a live message, and counts what it deleted. The clock is passed to `run_once`, so nothing waits.

use crate::gateway_messages::{count_messages, enqueue, get_message, post_message, spawn_gateway};
use crate::support::{TestApp, API_TOKEN};
use chrono::{Duration, Utc};
use diesel::{QueryDsl, RunQueryDsl};
use reclaim_gateway::metrics::GatewayMetrics;
use reclaim_gateway::retention::{Janitor, Swept};
use reclaim_gateway::schema::gateway_attempts;
use serde_json::json;

fn count_attempts(app: &TestApp) -> i64 {
    let mut conn = app.db.get().expect("conn");
    gateway_attempts::table
        .count()
        .get_result(&mut *conn)
        .expect("count")
}

async fn status_code_of(app: &TestApp, id: &str) -> u16 {
    app.client
        .get(app.gateway_url(&format!("/v1/messages/{id}")))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .expect("request")
        .status()
        .as_u16()
}

#[tokio::test]
async fn the_janitor_deletes_what_is_past_its_retention_and_never_a_live_message() {
    let (app, _dir) = spawn_gateway(|s| {
        s.gateway.retention.message_days = 30;
        s.gateway.retention.idempotency_hours = 24;
    })
    .await;
    let sms = json!({"channel": "sms", "to": "+14155550100", "template": "recovery_code", "data": {"code": "1"}});
    let sent = enqueue(&app, &sms).await;
    let replayable = post_message(&app, &sms, Some("retention-key-1")).await;
    assert_eq!(replayable.status(), 202);
    let mut short = sms.clone();
    short["expires_in"] = json!(60);
    short["fallback"] = json!([]);
    let expired = enqueue(&app, &short).await;
    let start = Utc::now();
    app.delivery
        .drain_at(start + Duration::seconds(120))
        .await
        .expect("drain");
    assert_eq!(get_message(&app, &sent).await["status"], "sent");
    assert_eq!(get_message(&app, &expired).await["status"], "expired");
    // Queued after the drain: still live when the others are long finished.
    let live = enqueue(&app, &sms).await;
    assert_eq!(count_messages(&app), 4);
    assert_eq!(count_attempts(&app), 2);

    let registry = prometheus::Registry::new();
    let metrics = GatewayMetrics::register(&registry, app.db.clone()).expect("metrics");
    let janitor = Janitor::new(
        app.db.clone(),
        app.settings.gateway.retention.clone(),
        metrics,
    );
    let at = |offset: Duration| start + Duration::seconds(120) + offset;
    assert_eq!(
        janitor
            .run_once(at(Duration::hours(23)))
            .await
            .expect("run"),
        Swept::default()
    );
    assert_eq!(
        janitor
            .run_once(at(Duration::hours(25)))
            .await
            .expect("run"),
        Swept {
            messages: 0,
            idempotency_records: 1,
            limit_records: 0,
        }
    );
    assert_eq!(
        janitor.run_once(at(Duration::days(29))).await.expect("run"),
        Swept::default()
    );
    assert_eq!(
        janitor.run_once(at(Duration::days(31))).await.expect("run"),
        Swept {
            messages: 3,
            idempotency_records: 0,
            limit_records: 0,
        }
    );
    assert_eq!(count_messages(&app), 1);
    assert_eq!(count_attempts(&app), 0);
    assert_eq!(get_message(&app, &live).await["status"], "queued");
    for gone in [&sent, &expired] {
        assert_eq!(status_code_of(&app, gone).await, 404);
    }
    let text = prometheus::TextEncoder::new()
        .encode_to_string(&registry.gather())
        .expect("metrics text");
    assert!(
        text.contains(r#"reclaim_gateway_retention_deleted_total{kind="messages"} 3"#),
        "{text}"
    );
    assert!(
        text.contains(r#"reclaim_gateway_retention_deleted_total{kind="idempotency_records"} 1"#),
        "{text}"
    );
}
