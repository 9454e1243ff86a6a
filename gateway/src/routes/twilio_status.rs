//! `POST /providers/twilio/status?message=<id>`: Twilio's status callbacks for messages and calls. The
//! signature is checked over the URL (query included) and the raw form before anything is read from them.
//! The message is found by our id in the URL (by the sid for callbacks without it), so a report that comes
//! before the worker recorded the sid is kept and applied when it does. `delivered` / `completed` mark the
//! message delivered; `undelivered` / `failed` / `busy` / `no-answer` / `canceled` are a failure of its
//! current step, sorted by the `ErrorCode` with the same table as the REST API's errors: transient codes
//! retry the step, permanent ones (and reports without a code) move to the next fallback step.

use super::ApiState;
use crate::delivery;
use crate::outbox::{ProviderReport, ReportOutcome, ReportedOutcome};
use crate::providers::twilio::{classify_twilio_code, ErrorClass};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use chrono::Utc;
use reclaim_common::auth::{twilio, AuthError};
use reclaim_common::json::{error_response, FieldError};
use reclaim_common::Db;

#[derive(Debug, thiserror::Error)]
pub enum ReceiveTwilioStatusError {
    #[error("signature refused: {0}")]
    Unauthorized(#[from] AuthError),
    #[error(transparent)]
    Invalid(#[from] FieldError),
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl ResponseError for ReceiveTwilioStatusError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Invalid(_) => StatusCode::BAD_REQUEST,
            Self::Unexpected(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            Self::Unauthorized(_) => error_response(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "missing or wrong X-Twilio-Signature",
                None,
            ),
            Self::Invalid(e) => e.error_response(),
            Self::Unexpected(e) => {
                tracing::error!(error = %format!("{e:#}"), "status callback failed");
                error_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error; see the server log for this request id",
                    None,
                )
            }
        }
    }
}

/// Receive a Twilio message or call status callback.
/// The parameters of Twilio's status callback that the gateway reads; Twilio sends more, and all of them are
/// signed.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct TwilioStatusForm {
    /// The message's sid (`SM…`), for an SMS.
    #[schema(rename = "MessageSid")]
    message_sid: Option<String>,
    /// `queued`, `sent`, `delivered`, `undelivered`, `failed`, ...
    #[schema(rename = "MessageStatus")]
    message_status: Option<String>,
    /// The call's sid (`CA…`), for a voice call.
    #[schema(rename = "CallSid")]
    call_sid: Option<String>,
    /// `completed`, `busy`, `no-answer`, `failed`, ...
    #[schema(rename = "CallStatus")]
    call_status: Option<String>,
    /// Twilio's error code when the message failed.
    #[schema(rename = "ErrorCode")]
    error_code: Option<String>,
}

#[utoipa::path(
    post,
    path = "/providers/twilio/status",
    request_body(content = TwilioStatusForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 204, description = "Recorded (or ignored: an intermediate status or an unknown message)"),
        (status = 400, description = "A parameter is invalid; `error.field` names it"),
        (status = 401, description = "Missing or wrong X-Twilio-Signature"),
    ),
    tag = "twilio",
    security(())
)]
pub async fn receive_twilio_status(
    request: HttpRequest,
    body: web::Bytes,
    state: web::Data<ApiState>,
    db: web::Data<Db>,
) -> Result<HttpResponse, ReceiveTwilioStatusError> {
    let params: Vec<(String, String)> = url::form_urlencoded::parse(&body).into_owned().collect();
    let url = format!(
        "{}{}",
        state.settings.public_url.trim_end_matches('/'),
        request.uri().path_and_query().map_or("", |p| p.as_str())
    );
    let signature = request
        .headers()
        .get("x-twilio-signature")
        .and_then(|v| v.to_str().ok());
    twilio::verify_form(&state.settings.twilio.auth_token, &url, &params, signature)?;
    let get = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let sid = get("MessageSid")
        .or_else(|| get("CallSid"))
        .ok_or_else(|| FieldError::new("MessageSid", "is required"))?;
    let reported = get("MessageStatus")
        .or_else(|| get("CallStatus"))
        .ok_or_else(|| FieldError::new("MessageStatus", "is required"))?;
    let delivered = match reported.as_str() {
        "delivered" | "completed" => true,
        "undelivered" | "failed" | "busy" | "no-answer" | "canceled" => false,
        // queued, sending, sent, ringing, in-progress, ...: nothing final yet.
        _ => return Ok(HttpResponse::NoContent().finish()),
    };
    let error_code = get("ErrorCode").filter(|code| !code.is_empty());
    let outcome = if delivered {
        ReportedOutcome::Delivered
    } else {
        // Without a code (a busy line, an unanswered call) nothing says a retry would do better.
        let class = error_code
            .as_deref()
            .and_then(|code| code.parse::<u32>().ok())
            .map_or(ErrorClass::Permanent, classify_twilio_code);
        ReportedOutcome::Undelivered {
            retry: class == ErrorClass::Transient,
        }
    };
    let message_id = request.uri().query().and_then(|query| {
        url::form_urlencoded::parse(query.as_bytes())
            .find(|(name, _)| name == "message")
            .map(|(_, id)| id.into_owned())
    });
    let report = ProviderReport {
        message_id,
        provider_message_id: sid,
        outcome,
        error_code,
    };
    let outcome = delivery::apply_report(
        &db,
        &state.settings,
        &state.metrics,
        report,
        Utc::now().naive_utc(),
    )
    .await?;
    match outcome {
        ReportOutcome::UnknownMessage => {
            tracing::info!(callback.status = %reported, "status callback for an unknown message")
        }
        ReportOutcome::KeptForTheWorker => {
            tracing::info!(callback.status = %reported, "status callback before the send was recorded; kept")
        }
        ReportOutcome::Unchanged(message) => {
            tracing::info!(message.id = %message.id, callback.status = %reported, "status callback; message already moved on")
        }
        ReportOutcome::Moved {
            message,
            transition,
        } => {
            tracing::info!(message.id = %message.id, callback.status = %reported, message.status = %transition.status(), "status callback")
        }
    }
    Ok(HttpResponse::NoContent().finish())
}
