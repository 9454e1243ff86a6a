//! `/admin/...` support actions, behind `gateway.admin.tokens` / `gateway.admin.operators`: the timeline of
//! one address (`GET /admin/recipients/{address}/timeline`), sending a failed message again
//! (`POST /admin/messages/{id}/retry`) and lifting the limits on one address (`DELETE /admin/limits?to=`).
//! Each call is logged with the operator's name and, where there is one, the masked address.

use super::messages::{internal, MessageView};
use super::ApiState;
use crate::outbox::{self, MessageStatus, Requeued};
use crate::timeline::{self, Recipient, TimelineView};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use chrono::{DateTime, TimeDelta};
use reclaim_common::auth::Operator;
use reclaim_common::json::{error_response, FieldError};
use reclaim_common::Db;

/// How far back a timeline looks without `since`.
const DEFAULT_SINCE_DAYS: i64 = 30;

/// Decodes `%XX` escapes of a path segment (`%2B` for `+`, `%40` for `@`): the router leaves some encoded.
fn percent_decoded(raw: &str) -> Option<String> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = raw.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The address in a path or query value, or a 400 naming `field`.
fn recipient(raw: &str, field: &str) -> Result<Recipient, FieldError> {
    let decoded = percent_decoded(raw)
        .ok_or_else(|| FieldError::new(field, "is not a valid percent-encoded value"))?;
    Recipient::parse(&decoded).map_err(|m| FieldError::new(field, m))
}

/// One query parameter, if given.
fn query_value(req: &HttpRequest, name: &str) -> Option<String> {
    url::form_urlencoded::parse(req.query_string().as_bytes())
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
}

#[derive(Debug, thiserror::Error)]
pub enum TimelineError {
    #[error(transparent)]
    Invalid(#[from] FieldError),
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl ResponseError for TimelineError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::Invalid(_) => StatusCode::BAD_REQUEST,
            Self::Unexpected(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            Self::Invalid(e) => e.error_response(),
            Self::Unexpected(e) => internal(e),
        }
    }
}

/// Every message and verification to one address since a time, newest first: attempts with their
/// provider, outcome, error code and its meaning, fallback steps, delivery reports, and the limits that
/// refuse sends to it now. The address asked for is shown in full, every other one masked.
#[utoipa::path(
    get,
    path = "/admin/recipients/{address}/timeline",
    params(
        ("address" = String, Path, min_length = 3, max_length = 320, pattern = r"^(\+[1-9][0-9]{6,14}|[^@\s]+@[^@\s]+)$", description = "An email address (any case) or an E.164 phone number (`+` may be sent as %2B)"),
        ("since" = Option<String>, Query, description = "RFC 3339 time; default 30 days ago"),
    ),
    responses(
        (status = 200, description = "The timeline", body = TimelineView),
        (status = 400, description = "`address` is neither an email address nor an E.164 number, or `since` is not an RFC 3339 time"),
        (status = 401, description = "Missing or wrong admin bearer token"),
    ),
    security(("bearer" = []))
)]
pub async fn recipient_timeline(
    req: HttpRequest,
    path: web::Path<String>,
    operator: Operator,
    state: web::Data<ApiState>,
    db: web::Data<Db>,
) -> Result<HttpResponse, TimelineError> {
    let recipient = recipient(&path, "address")?;
    let now = state.clock.now();
    let since = match query_value(&req, "since") {
        Some(text) => DateTime::parse_from_rfc3339(&text)
            .map_err(|_| {
                FieldError::new(
                    "since",
                    "must be an RFC 3339 time such as 2026-11-29T12:00:00Z",
                )
            })?
            .naive_utc(),
        None => (now - TimeDelta::days(DEFAULT_SINCE_DAYS)).naive_utc(),
    };
    let limits = state.limits.clone();
    let asked = recipient.clone();
    let view = db
        .run(move |conn| timeline::build(conn, &limits, &asked, since, now.naive_utc()))
        .await
        .map_err(anyhow::Error::new)?;
    tracing::info!(
        operator = %operator.name(),
        recipient = %recipient.masked(),
        timeline.entries = view.entries.len(),
        "support timeline read"
    );
    Ok(HttpResponse::Ok().json(view))
}

#[derive(Debug, thiserror::Error)]
pub enum RetryError {
    #[error("no such message")]
    NotFound,
    #[error("the message is {0}; only failed, undelivered or expired messages can be sent again")]
    NotRetriable(MessageStatus),
    #[error("the message has expired or its data (code or link) is gone; start a new verification or send a new message")]
    Spent,
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl ResponseError for RetryError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::NotRetriable(_) | Self::Spent => StatusCode::CONFLICT,
            Self::Unexpected(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            Self::NotFound => error_response(
                self.status_code(),
                "not_found",
                self.to_string(),
                Some("id"),
            ),
            Self::NotRetriable(_) => error_response(
                self.status_code(),
                "not_retriable",
                self.to_string(),
                Some("id"),
            ),
            Self::Spent => {
                error_response(self.status_code(), "spent", self.to_string(), Some("id"))
            }
            Self::Unexpected(e) => internal(e),
        }
    }
}

/// Queues a `failed`, `undelivered` or `expired` message again, due now. Its attempts are kept and the next
/// one is appended after them; its retry budget starts afresh on the channel it ended on.
#[utoipa::path(
    post,
    path = "/admin/messages/{id}/retry",
    params(("id" = String, Path, description = "Message id")),
    responses(
        (status = 200, description = "Queued again", body = MessageView),
        (status = 401, description = "Missing or wrong admin bearer token"),
        (status = 404, description = "No such message"),
        (status = 409, description = "The message is queued, sending, sent, delivered or canceled (`not_retriable`), or it has expired or its data is gone (`spent`)"),
    ),
    security(("bearer" = []))
)]
pub async fn retry_message(
    path: web::Path<String>,
    operator: Operator,
    state: web::Data<ApiState>,
    db: web::Data<Db>,
) -> Result<HttpResponse, RetryError> {
    let id = path.into_inner();
    if uuid::Uuid::parse_str(&id).is_err() {
        return Err(RetryError::NotFound);
    }
    let now = state.clock.now().naive_utc();
    let message_id = id.clone();
    let (outcome, found) = db
        .run(move |conn| {
            let outcome = outbox::requeue(conn, &message_id, now)?;
            Ok::<_, reclaim_common::db::DbError>((outcome, outbox::find(conn, &message_id)?))
        })
        .await
        .map_err(anyhow::Error::new)?;
    match outcome {
        Requeued::Queued => {}
        Requeued::UnknownMessage => return Err(RetryError::NotFound),
        Requeued::NotFinishedUnsent(status) => return Err(RetryError::NotRetriable(status)),
        Requeued::Spent => return Err(RetryError::Spent),
    }
    let (message, attempts) = found.ok_or(RetryError::NotFound)?;
    tracing::info!(
        operator = %operator.name(),
        message.id = %id,
        "message queued again by an operator"
    );
    Ok(HttpResponse::Ok().json(MessageView::new(&message, &attempts)))
}

#[derive(Debug, thiserror::Error)]
pub enum LiftLimitsError {
    #[error(transparent)]
    Invalid(#[from] FieldError),
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl ResponseError for LiftLimitsError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::Invalid(_) => StatusCode::BAD_REQUEST,
            Self::Unexpected(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            Self::Invalid(e) => e.error_response(),
            Self::Unexpected(e) => internal(e),
        }
    }
}

/// Lifts every per-destination limit (cooldown and sends per window) on one address: the sends counted for
/// it are forgotten, so the next send to it is let through. Limits per client IP, identity and number prefix
/// are not touched.
#[utoipa::path(
    delete,
    path = "/admin/limits",
    params(("to" = String, Query, min_length = 3, max_length = 320, pattern = r"^(\+[1-9][0-9]{6,14}|[^@\s]+@[^@\s]+)$", description = "An email address or an E.164 phone number")),
    responses(
        (status = 204, description = "Lifted (also when nothing was counted)"),
        (status = 400, description = "`to` is missing, or neither an email address nor an E.164 number"),
        (status = 401, description = "Missing or wrong admin bearer token"),
    ),
    security(("bearer" = []))
)]
pub async fn lift_limits(
    req: HttpRequest,
    operator: Operator,
    state: web::Data<ApiState>,
    db: web::Data<Db>,
) -> Result<HttpResponse, LiftLimitsError> {
    let raw = query_value(&req, "to").ok_or_else(|| FieldError::new("to", "is required"))?;
    let recipient = Recipient::parse(&raw).map_err(|m| FieldError::new("to", m))?;
    let limits = state.limits.clone();
    let destination = recipient.destination().clone();
    let forgotten = db
        .run(move |conn| limits.lift(conn, &destination))
        .await
        .map_err(anyhow::Error::new)?;
    tracing::info!(
        operator = %operator.name(),
        recipient = %recipient.masked(),
        limits.forgotten_sends = forgotten,
        "limits lifted by an operator"
    );
    Ok(HttpResponse::NoContent().finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_values_are_percent_decoded() {
        assert_eq!(
            percent_decoded("%2B14155550100").as_deref(),
            Some("+14155550100")
        );
        assert_eq!(
            percent_decoded("jane%40example.com").as_deref(),
            Some("jane@example.com")
        );
        assert_eq!(percent_decoded("+1415").as_deref(), Some("+1415"));
        assert_eq!(percent_decoded("%2"), None);
        assert_eq!(percent_decoded("%zz"), None);
    }
}
