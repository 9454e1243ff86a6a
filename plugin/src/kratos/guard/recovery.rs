//! Recovery code sends through the guard. A `POST /self-service/recovery` with `method=code` and an address
//! asks Kratos to send a code, or to send it again (the "resend" button submits the address again). Before
//! Kratos sees it, the guard asks the gateway's abuse limits whether a send to that address, from that
//! client, would be allowed. The courier adapter counts the send when Kratos hands it over, so the guard
//! only looks. A refused request never reaches Kratos, and is answered as Kratos answers a submission it
//! refuses:
//! - API and SPA clients (JSON): 400 with the recovery flow, our message in `ui.messages`;
//! - browser form posts: 303 back to the recovery UI (`plugin.kratos.guard.recovery_ui_url?flow=<id>`); the
//!   flow the UI then fetches through the guard carries the message once.

use super::proxy::Body;
use super::{forward, kratos_error, GuardState, Outcome};
use crate::kratos::messages;
use crate::kratos::response::UiMessage;
use crate::policy::Locale;
use crate::verdicts::FlowId;
use actix_web::http::{header, StatusCode};
use actix_web::{HttpRequest, HttpResponse};
use bytes::Bytes;
use reclaim_common::clock::Clock;
use reclaim_common::sealed::Keyring;
use reclaim_common::settings::{Environment, Settings};
use reclaim_common::Db;
use reclaim_gateway::address::Destination;
use reclaim_gateway::channel::Channel;
use reclaim_gateway::limits::{Limits, SendAttempt};
use serde_json::Value;
use std::time::Duration;

/// The gateway's abuse limits, read from the guard: the same settings and storage keys as the gateway's,
/// on the same database, so the guard sees the sends the gateway counted.
#[derive(Clone)]
pub(super) struct RecoverySends {
    limits: Limits,
    db: Db,
    clock: Clock,
}

/// Why a send would be refused: the limit's stable reason code, and when a send would be allowed again.
#[derive(Debug)]
pub(super) struct SendRefusal {
    pub reason: String,
    pub retry_after: Option<Duration>,
}

impl RecoverySends {
    pub(super) fn new(settings: &Settings, db: Db, clock: Clock) -> anyhow::Result<Self> {
        let keyring = Keyring::from_settings(
            "gateway.storage.keys",
            &settings.gateway.storage.keys,
            settings.environment != Environment::Production,
        )?;
        Ok(Self {
            limits: Limits::for_peeking(&settings.gateway, keyring),
            db,
            clock,
        })
    }

    /// Whether the gateway would refuse a code sent to `address` now. The guard knows neither the identity
    /// (Kratos looks the address up) nor a client address the gateway counted (Kratos's courier call
    /// carries none), so the limits per destination decide here; the gateway applies all of them when
    /// Kratos hands over the message.
    pub(super) async fn refusal(&self, address: &str) -> anyhow::Result<Option<SendRefusal>> {
        // An address that is not one is Kratos's to refuse.
        let Ok(destination) = Destination::parse(Channel::Email, address) else {
            return Ok(None);
        };
        let limits = self.limits.clone();
        let now = self.clock.now().naive_utc();
        let answer = self
            .db
            .run(move |conn| {
                let attempt = SendAttempt {
                    channel: Channel::Email,
                    destination: &destination,
                    client_ip: None,
                    identity_id: None,
                };
                limits.peek(conn, &attempt, now)
            })
            .await?;
        Ok(answer.err().map(|refusal| SendRefusal {
            reason: refusal.reason.as_str().to_string(),
            retry_after: refusal.retry_after,
        }))
    }
}

/// A submission to a recovery flow whose body the guard read.
pub(super) async fn inspect(
    guard: &GuardState,
    req: &HttpRequest,
    flow_id: Option<FlowId>,
    body: Bytes,
    encoding: Option<&super::submission::Encoding>,
) -> (Outcome, HttpResponse) {
    let forward_body = if body.is_empty() {
        Body::None
    } else {
        Body::Buffered(body.clone())
    };
    let (Some(flow_id), Some(address)) = (
        flow_id,
        super::submission::find_recovery_address(encoding, &body).await,
    ) else {
        return forward(guard, req, forward_body, Outcome::Passed).await;
    };
    let refusal = match guard.sends.refusal(&address).await {
        Ok(refusal) => refusal,
        Err(error) => {
            // The limits are a guard against abuse, not a precondition of recovery: Kratos's courier call
            // meets them again in the gateway, which is where a send is counted.
            tracing::warn!(flow.id = %flow_id, error = %error, "recovery send limits could not be read; forwarding");
            return forward(guard, req, forward_body, Outcome::Unchecked).await;
        }
    };
    let Some(refusal) = refusal else {
        return forward(guard, req, forward_body, Outcome::Allowed).await;
    };
    guard
        .metrics
        .verdicts
        .with_label_values(&[refusal.reason.as_str()])
        .inc();
    let locale = Locale::negotiate(
        req.headers()
            .get(header::ACCEPT_LANGUAGE)
            .and_then(|v| v.to_str().ok()),
        guard.passwords.policy().default_locale(),
    );
    let message = messages::recovery_send_refused(
        locale,
        refusal
            .retry_after
            .map(|d| d.as_secs() + u64::from(d.subsec_nanos() > 0)),
    );
    tracing::info!(flow.id = %flow_id, reason = %refusal.reason, "recovery code send refused by the limits");
    (
        Outcome::Refused,
        refuse(guard, req, &flow_id, &refusal.reason, message).await,
    )
}

async fn refuse(
    guard: &GuardState,
    req: &HttpRequest,
    flow_id: &FlowId,
    reason: &str,
    message: UiMessage,
) -> HttpResponse {
    let ui = &guard.settings.guard.recovery_ui_url;
    if !wants_json(req) && !ui.is_empty() {
        let messages = serde_json::to_value([&message]).unwrap_or_default();
        let now = guard.passwords.clock().now();
        let db = guard.passwords.db().clone();
        let (flow, reason, ttl) = (flow_id.clone(), reason.to_string(), guard.ttl);
        let staged = db
            .run(move |conn| {
                crate::verdicts::stage_recovery_notice(conn, &flow, &reason, &messages, now, ttl)
            })
            .await;
        if let Err(error) = staged {
            tracing::error!(flow.id = %flow_id, error = %error, "cannot keep the recovery notice");
        }
        let separator = if ui.contains('?') { '&' } else { '?' };
        return HttpResponse::SeeOther()
            .insert_header((header::LOCATION, format!("{ui}{separator}flow={flow_id}")))
            .finish();
    }
    let path = format!("/self-service/recovery/flows?id={flow_id}");
    let flow = match guard.upstream.get_as(req, &path).await {
        Ok(answer) if answer.status().is_success() => answer.json::<Value>().await.ok(),
        Ok(_) | Err(_) => None,
    };
    let Some(mut flow) = flow else {
        return kratos_error(StatusCode::TOO_MANY_REQUESTS, &message.text);
    };
    add_message(&mut flow, &message);
    HttpResponse::BadRequest().json(flow)
}

/// `GET /self-service/recovery/flows?id=<id>` through the guard: Kratos's answer, plus the notice kept for
/// this flow, once.
pub(super) async fn show_flow(guard: &GuardState, req: &HttpRequest) -> (Outcome, HttpResponse) {
    let flow_id = url::form_urlencoded::parse(req.query_string().as_bytes())
        .find(|(name, _)| name == "id")
        .and_then(|(_, value)| FlowId::parse(&value));
    let Some(flow_id) = flow_id else {
        return forward(guard, req, Body::None, Outcome::Passed).await;
    };
    let now = guard.passwords.clock().now();
    let db = guard.passwords.db().clone();
    let id = flow_id.clone();
    let notice = db
        .run(move |conn| crate::verdicts::take_recovery_notice(conn, &id, now))
        .await
        .unwrap_or_else(|error| {
            tracing::error!(flow.id = %flow_id, error = %error, "cannot read the recovery notice");
            None
        });
    let Some(Value::Array(notes)) = notice else {
        return forward(guard, req, Body::None, Outcome::Passed).await;
    };
    let answer = guard
        .upstream
        .forward_changed(req, |body| {
            let Ok(mut flow) = serde_json::from_slice::<Value>(&body) else {
                return body;
            };
            for note in &notes {
                push_message(&mut flow, note.clone());
            }
            serde_json::to_vec(&flow).map(Bytes::from).unwrap_or(body)
        })
        .await;
    match answer {
        Ok(response) => (Outcome::Refused, response),
        Err(_) => (
            Outcome::KratosUnreachable,
            kratos_error(StatusCode::BAD_GATEWAY, "Kratos did not answer"),
        ),
    }
}

fn add_message(flow: &mut Value, message: &UiMessage) {
    push_message(flow, serde_json::to_value(message).unwrap_or_default());
}

fn push_message(flow: &mut Value, message: Value) {
    let Some(ui) = flow.get_mut("ui").and_then(Value::as_object_mut) else {
        return;
    };
    match ui.get_mut("messages").and_then(Value::as_array_mut) {
        Some(list) => list.push(message),
        None => {
            ui.insert("messages".into(), Value::Array(vec![message]));
        }
    }
}

/// Kratos answers JSON to a client that sent JSON or prefers it over HTML.
fn wants_json(req: &HttpRequest) -> bool {
    let header_text = |name| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_ascii_lowercase()
    };
    if header_text(header::CONTENT_TYPE).starts_with("application/json") {
        return true;
    }
    let accept = header_text(header::ACCEPT);
    accept.contains("application/json") && !accept.contains("text/html")
}
