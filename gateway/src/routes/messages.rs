//! `POST /v1/messages` (enqueue a templated notice) and `GET /v1/messages/{id}` (its state and attempts).

use super::ApiState;
use crate::address::Destination;
use crate::channel::Channel;
use crate::intake::{Stored, Submission};
use crate::outbox::{self, AttemptRow, FallbackStep, MessageRow, MessageStatus, NewMessage};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use chrono::{DateTime, SubsecRound, TimeDelta, Utc};
use reclaim_common::db::DbError;
use reclaim_common::idempotency::{self, IdempotencyKey};
use reclaim_common::json::{error_response, FieldError};
use reclaim_common::Db;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

const IDEMPOTENCY_SCOPE: &str = "gateway.messages";

/// A templated notice to deliver.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MessageRequest {
    pub channel: Channel,
    /// E.164 number (`+14155550100`) for sms and voice, an email address for email.
    pub to: String,
    /// A folder name under `gateway.templates_dir`, e.g. `recovery_code`.
    pub template: String,
    /// BCP 47; falls back to the language, then to `gateway.messages.default_locale`.
    pub locale: Option<String>,
    /// The template's variables, e.g. `{"code": "123456"}`.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub data: serde_json::Map<String, serde_json::Value>,
    /// Seconds until the message is worthless (the code's lifetime); it is never sent after that.
    #[serde(default, deserialize_with = "whole_seconds")]
    pub expires_in: Option<u64>,
    /// Where to go when this channel fails for good; replaces the configured chain. Empty = no fallback.
    pub fallback: Option<Vec<FallbackRequest>>,
}

/// A JSON Schema `integer`: `900`, or `900.0` as some clients write it (a number with no fractional part).
fn whole_seconds<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<u64>, D::Error> {
    use serde::de::Error;
    let Some(number) = Option::<serde_json::Number>::deserialize(deserializer)? else {
        return Ok(None);
    };
    if let Some(whole) = number.as_u64() {
        return Ok(Some(whole));
    }
    number
        .as_f64()
        .filter(|f| f.fract() == 0.0 && (0.0..=9_007_199_254_740_992.0).contains(f))
        .and_then(|f| format!("{f:.0}").parse().ok())
        .map(Some)
        .ok_or_else(|| D::Error::custom("must be a whole number of seconds"))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FallbackRequest {
    pub channel: Channel,
    /// Required for email (an alternate address); for sms/voice it defaults to the message's number.
    pub to: Option<String>,
}

/// A message and its delivery history. Addresses are masked.
#[derive(Debug, Serialize, ToSchema)]
pub struct MessageView {
    pub id: String,
    /// `queued | sending | sent | delivered | undelivered | failed | expired | canceled`
    pub status: String,
    pub channel: String,
    pub to: String,
    pub template: String,
    pub locale: String,
    pub attempts: i32,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
    pub provider: Option<String>,
    /// The provider's id of the last accepted attempt (e.g. a Twilio `SM…`/`CA…` sid), for support cases.
    pub provider_message_id: Option<String>,
    pub last_error: Option<String>,
    pub fallback: Vec<FallbackView>,
    pub fallback_position: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub history: Vec<AttemptView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct FallbackView {
    pub channel: String,
    pub to: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AttemptView {
    pub number: i32,
    pub channel: String,
    pub provider: String,
    /// `sent`, `transient`, `permanent`, `timeout`, or from a status callback `delivered` / `undelivered`.
    pub outcome: String,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub provider_message_id: Option<String>,
    pub latency_ms: i64,
    pub started_at: DateTime<Utc>,
}

impl MessageView {
    pub(super) fn new(message: &MessageRow, attempts: &[AttemptRow]) -> Self {
        let live = message.status == MessageStatus::Queued;
        Self {
            id: message.id.clone(),
            status: message.status.as_str().into(),
            channel: message.channel.clone(),
            to: reclaim_common::secret::mask_address(&message.destination),
            template: message.template.clone(),
            locale: message.locale.clone(),
            attempts: message.attempts,
            next_attempt_at: live.then(|| message.next_attempt_at.and_utc()),
            expires_at: message.expires_at.map(|e| e.and_utc()),
            provider: message.provider.clone(),
            provider_message_id: message.provider_message_id.clone(),
            last_error: message.last_error.clone(),
            fallback: message
                .fallback_steps()
                .into_iter()
                .map(|s| FallbackView {
                    channel: s.channel.as_str().into(),
                    to: reclaim_common::secret::mask_address(&s.to),
                })
                .collect(),
            fallback_position: message.fallback_position,
            created_at: message.created_at.and_utc(),
            updated_at: message.updated_at.and_utc(),
            history: attempts
                .iter()
                .map(|a| AttemptView {
                    number: a.number,
                    channel: a.channel.clone(),
                    provider: a.provider.clone(),
                    outcome: a.outcome.as_str().into(),
                    error_code: a.error_code.clone(),
                    error_message: a.error_message.clone(),
                    provider_message_id: a.provider_message_id.clone(),
                    latency_ms: a.latency_ms,
                    started_at: a.started_at.and_utc(),
                })
                .collect(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EnqueueError {
    #[error(transparent)]
    Invalid(#[from] FieldError),
    #[error("the Idempotency-Key was already used with a different request")]
    KeyReused,
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl ResponseError for EnqueueError {
    fn status_code(&self) -> StatusCode {
        match self {
            EnqueueError::Invalid(_) => StatusCode::BAD_REQUEST,
            EnqueueError::KeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            EnqueueError::Unexpected(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            EnqueueError::Invalid(e) => e.error_response(),
            EnqueueError::KeyReused => error_response(
                self.status_code(),
                "idempotency_key_reused",
                self.to_string(),
                Some("Idempotency-Key"),
            ),
            EnqueueError::Unexpected(e) => internal(e),
        }
    }
}

/// 503 when the database is unavailable ([`reclaim_common::http::database_unavailable`]), else 500 without
/// details; the cause goes to the log with the request id.
pub(super) fn internal(error: &anyhow::Error) -> HttpResponse {
    if reclaim_common::db::is_unavailable(error) {
        return reclaim_common::http::database_unavailable(error);
    }
    tracing::error!(error = %format!("{error:#}"), "request failed");
    error_response(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "internal error; see the server log for this request id",
        None,
    )
}

fn db_error(error: DbError) -> anyhow::Error {
    anyhow::Error::new(error)
}

/// Enqueue a templated message.
#[utoipa::path(
    post,
    path = "/v1/messages",
    request_body = MessageRequest,
    params(("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = r"^[\x21-\x7E]+$", description = "1 to 255 visible ASCII characters. Retries with the same key get the first answer")),
    responses(
        (status = 202, description = "Queued", body = MessageView),
        (status = 400, description = "Invalid field, named in the error"),
        (status = 401, description = "Missing or wrong bearer token"),
        (status = 422, description = "Idempotency-Key reused with a different request"),
    ),
    security(("bearer" = []))
)]
pub async fn enqueue_message(
    request: HttpRequest,
    body: web::Bytes,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, EnqueueError> {
    let key = IdempotencyKey::from_headers(request.headers(), "Idempotency-Key")?;
    let parsed: MessageRequest = reclaim_common::json::parse(&body)?;
    // Microseconds: what both databases keep, so the answer shows the times a later GET reads back.
    let now = Utc::now().naive_utc().trunc_subsecs(6);
    let id = uuid::Uuid::now_v7().to_string();
    let new = validate(
        &state,
        parsed,
        id,
        now,
        key.as_ref().map(|k| k.as_str().to_string()),
    )?;
    let answer = serde_json::to_string(&MessageView::new(&new.as_queued_row(), &[]))
        .map_err(|e| anyhow::anyhow!("cannot encode the answer: {e}"))?;
    let submission = Submission {
        message: new.sealed(&state.keyring),
        once: key.map(|key| idempotency::Request::new(IDEMPOTENCY_SCOPE, key, &body)),
        answer,
    };
    let answer = submission.answer.clone();
    match state.intake.submit(submission).await.map_err(db_error)? {
        Stored::New => Ok(HttpResponse::Accepted()
            .content_type("application/json")
            .body(answer)),
        Stored::Earlier(found) if found.same_request => Ok(idempotency::replay(&found)),
        Stored::Earlier(_) => Err(EnqueueError::KeyReused),
    }
}

fn validate(
    state: &ApiState,
    request: MessageRequest,
    id: String,
    now: chrono::NaiveDateTime,
    idempotency_key: Option<String>,
) -> Result<NewMessage, FieldError> {
    let settings = &state.settings;
    let templates = &state.templates;
    let destination =
        Destination::parse(request.channel, &request.to).map_err(|m| FieldError::new("to", m))?;
    if !templates.names().any(|n| n == request.template) {
        return Err(FieldError::new(
            "template",
            format!("no template named `{}`", request.template),
        ));
    }
    let locale = request
        .locale
        .unwrap_or_else(|| settings.messages.default_locale.clone());
    if !crate::templates::is_well_formed_locale(&locale) {
        return Err(FieldError::new(
            "locale",
            "must be a BCP 47 tag such as en or es-MX",
        ));
    }
    let data = serde_json::Value::Object(request.data);
    let render = |channel: Channel, prefix: &str| {
        templates
            .render(&request.template, &locale, channel, &data)
            .map(|_| ())
            .map_err(|e| {
                let field = if e.field == "channel" {
                    prefix.to_string()
                } else {
                    e.field
                };
                FieldError::new(field, e.message)
            })
    };
    render(request.channel, "channel")?;
    let expires_at = match request.expires_in {
        None => None,
        Some(0) => return Err(FieldError::new("expires_in", "must be at least 1 second")),
        Some(seconds) if seconds > settings.messages.max_expires_in_seconds => {
            return Err(FieldError::new(
                "expires_in",
                format!(
                    "must be at most {} seconds (gateway.messages.max_expires_in_seconds)",
                    settings.messages.max_expires_in_seconds
                ),
            ))
        }
        Some(seconds) => Some(now + TimeDelta::seconds(i64::try_from(seconds).unwrap_or(i64::MAX))),
    };
    let fallback = match request.fallback {
        Some(steps) => {
            // A chain fans one request out to several sends: keep it short, and keep phone steps on the
            // message's own number, so that a chain cannot reach numbers the limits never saw.
            let max = settings.limits.max_fallback_steps;
            if steps.len() > usize::try_from(max).unwrap_or(usize::MAX) {
                return Err(FieldError::new(
                    "fallback",
                    format!("may have at most {max} steps (gateway.limits.max_fallback_steps)"),
                ));
            }
            let mut resolved = Vec::with_capacity(steps.len());
            for (i, step) in steps.into_iter().enumerate() {
                let to = match step.to {
                    Some(to) if step.channel.uses_phone_numbers() => {
                        let number = Destination::parse(step.channel, &to)
                            .map_err(|m| FieldError::new(format!("fallback[{i}].to"), m))?;
                        if !request.channel.uses_phone_numbers() || number != destination {
                            return Err(FieldError::new(
                                format!("fallback[{i}].to"),
                                "an sms or voice step goes to the message's own number; leave `to` out",
                            ));
                        }
                        number
                    }
                    Some(to) => Destination::parse(step.channel, &to)
                        .map_err(|m| FieldError::new(format!("fallback[{i}].to"), m))?,
                    None if step.channel.uses_phone_numbers()
                        && request.channel.uses_phone_numbers() =>
                    {
                        destination.clone()
                    }
                    None => {
                        return Err(FieldError::new(
                            format!("fallback[{i}].to"),
                            "is required when the fallback needs another address",
                        ))
                    }
                };
                render(step.channel, &format!("fallback[{i}].channel"))?;
                resolved.push(FallbackStep {
                    channel: step.channel,
                    to: to.as_str().to_string(),
                });
            }
            resolved
        }
        None => crate::fallback::configured(
            &settings.channels,
            templates,
            &request.template,
            &locale,
            request.channel,
            &destination,
        ),
    };
    Ok(NewMessage {
        id,
        channel: request.channel.as_str().into(),
        destination: destination.as_str().into(),
        template: request.template,
        locale,
        data: data.to_string(),
        status: MessageStatus::Queued,
        attempts: 0,
        next_attempt_at: now,
        expires_at,
        fallback: serde_json::to_string(&fallback).unwrap_or_else(|_| "[]".into()),
        fallback_position: 0,
        idempotency_key,
        created_at: now,
        updated_at: now,
    })
}

#[derive(Debug, thiserror::Error)]
pub enum GetMessageError {
    #[error("no such message")]
    NotFound,
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl ResponseError for GetMessageError {
    fn status_code(&self) -> StatusCode {
        match self {
            GetMessageError::NotFound => StatusCode::NOT_FOUND,
            GetMessageError::Unexpected(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            GetMessageError::NotFound => error_response(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such message",
                Some("id"),
            ),
            GetMessageError::Unexpected(e) => internal(e),
        }
    }
}

/// A message with its attempts.
#[utoipa::path(
    get,
    path = "/v1/messages/{id}",
    params(("id" = String, Path, description = "Message id from POST /v1/messages")),
    responses(
        (status = 200, description = "The message", body = MessageView),
        (status = 401, description = "Missing or wrong bearer token"),
        (status = 404, description = "No such message"),
    ),
    security(("bearer" = []))
)]
pub async fn get_message(
    path: web::Path<String>,
    db: web::Data<Db>,
) -> Result<HttpResponse, GetMessageError> {
    let id = path.into_inner();
    if uuid::Uuid::parse_str(&id).is_err() {
        return Err(GetMessageError::NotFound);
    }
    let found = db
        .run(move |conn| outbox::find(conn, &id))
        .await
        .map_err(db_error)?
        .ok_or(GetMessageError::NotFound)?;
    Ok(HttpResponse::Ok().json(MessageView::new(&found.0, &found.1)))
}
