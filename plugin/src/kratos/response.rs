//! What our hooks answer, in the shapes Kratos parses: an interrupt (4xx with `messages`) to refuse, a
//! `200 {"identity": {...}}` to change the identity before it is saved, or `204` to let the flow go on.

use actix_web::http::StatusCode;
use actix_web::HttpResponse;
use serde::Serialize;
use serde_json::{Map, Value};

/// Where a message shows in Kratos's UI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Under the password field (`#/password`).
    Password,
    /// Above the form (`#/`).
    Global,
}

impl Target {
    fn pointer(self) -> &'static str {
        match self {
            Target::Password => "#/password",
            Target::Global => "#/",
        }
    }
}

/// One message of a Kratos interrupt.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct UiMessage {
    pub id: u32,
    pub text: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Value::is_null")]
    pub context: Value,
}

#[derive(Debug, Serialize)]
struct Interrupt<'a> {
    messages: [InterruptGroup<'a>; 1],
}

#[derive(Debug, Serialize)]
struct InterruptGroup<'a> {
    instance_ptr: &'static str,
    messages: &'a [UiMessage],
}

/// The body of a refusal Kratos shows to the user.
pub fn interrupt_body(target: Target, messages: &[UiMessage]) -> Value {
    serde_json::to_value(Interrupt {
        messages: [InterruptGroup {
            instance_ptr: target.pointer(),
            messages,
        }],
    })
    .unwrap_or(Value::Null)
}

/// [`interrupt_body`] for messages kept as JSON (rendered by the edge guard when it checked the password).
pub fn interrupt_body_staged(target: Target, messages: Value) -> Value {
    serde_json::json!({"messages": [{"instance_ptr": target.pointer(), "messages": messages}]})
}

/// A refusal Kratos shows to the user. `status` must be a 4xx other than 429 (Kratos retries 429 and 5xx and
/// then shows a generic error instead of our message).
pub fn interrupt(status: StatusCode, target: Target, messages: &[UiMessage]) -> HttpResponse {
    debug_assert!(status.is_client_error() && status != StatusCode::TOO_MANY_REQUESTS);
    HttpResponse::build(status).json(interrupt_body(target, messages))
}

/// The body of `200 {"identity": {"metadata_public": ...}}`. Kratos replaces `metadata_public` whole, so
/// `existing` (what the identity holds now) is kept and only our keys are set.
pub fn metadata_public_body(existing: Map<String, Value>, ours: Map<String, Value>) -> Value {
    let mut merged = existing;
    merged.extend(ours);
    serde_json::json!({"identity": {"metadata_public": merged}})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_interrupt_has_the_shape_of_kratos_own_example() {
        let example: Value = serde_json::from_str(
            &std::fs::read_to_string(format!(
                "{}/../../shared/contracts/kratos/webhook-interrupt-response.docs-example.json",
                env!("CARGO_MANIFEST_DIR")
            ))
            .expect("contract"),
        )
        .expect("json");
        let ours = interrupt_body(
            Target::Password,
            &[UiMessage {
                id: 4_470_001,
                text: "too young".into(),
                kind: "error",
                context: serde_json::json!({"available_at": "2026-01-01T00:00:00Z"}),
            }],
        );
        let keys = |v: &Value| {
            v.as_object()
                .map(|o| o.keys().cloned().collect::<Vec<_>>())
                .unwrap_or_default()
        };
        assert_eq!(keys(&ours), keys(&example));
        assert_eq!(keys(&ours["messages"][0]), keys(&example["messages"][0]));
        assert_eq!(ours["messages"][0]["instance_ptr"], "#/password");
        assert_eq!(ours["messages"][0]["messages"][0]["id"], 4_470_001);
    }

    #[test]
    fn metadata_public_keeps_what_the_identity_already_has() {
        let mut existing = Map::new();
        existing.insert("plan".into(), Value::String("gold".into()));
        let mut ours = Map::new();
        ours.insert("password_changed_at".into(), Value::String("now".into()));
        let merged = metadata_public_body(existing, ours);
        assert_eq!(merged["identity"]["metadata_public"]["plan"], "gold");
        assert_eq!(
            merged["identity"]["metadata_public"]["password_changed_at"],
            "now"
        );
    }
}
