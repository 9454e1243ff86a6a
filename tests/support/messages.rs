//! Outbox rows written straight into the database, as a gateway would have queued them.

use chrono::NaiveDateTime;
use reclaim_gateway::outbox::{MessageStatus, NewMessage};

/// A queued SMS to +14155550100 with `template` and `{"code": code}`, due at `now`, without fallback.
pub fn queued_sms(id: &str, template: &str, code: &str, now: NaiveDateTime) -> NewMessage {
    NewMessage {
        id: id.to_string(),
        channel: "sms".into(),
        destination: "+14155550100".into(),
        template: template.into(),
        locale: "en".into(),
        data: serde_json::json!({ "code": code }).to_string(),
        status: MessageStatus::Queued,
        attempts: 0,
        next_attempt_at: now,
        expires_at: None,
        fallback: "[]".into(),
        fallback_position: 0,
        idempotency_key: None,
        created_at: now,
        updated_at: now,
    }
}
