//! `POST /providers/twilio/status`: Twilio's status callbacks for messages and calls. The signature is
//! checked over the raw form before anything is read from it; `delivered` / `completed` mark the message
//! delivered, `undelivered` / `failed` / `busy` / `no-answer` / `canceled` move it to its next fallback.

use super::ApiState;
use crate::outbox::{self, status};
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
#[utoipa::path(
    post,
    path = "/providers/twilio/status",
    request_body(content = String, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 204, description = "Recorded (or ignored: an intermediate status or an unknown message)"),
        (status = 401, description = "Missing or wrong X-Twilio-Signature"),
    )
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
    let error_code = get("ErrorCode");
    let outcome = db
        .run(move |conn| {
            outbox::report_delivery(
                conn,
                &sid,
                delivered,
                error_code.as_deref(),
                Utc::now().naive_utc(),
            )
        })
        .await
        .map_err(anyhow::Error::new)?;
    match outcome {
        None => {
            tracing::info!(callback.status = %reported, "status callback for an unknown message")
        }
        Some((message, new_status)) => {
            tracing::info!(message.id = %message.id, callback.status = %reported, message.status = new_status, "status callback");
            if new_status == status::QUEUED {
                if let Some(step) = message.next_fallback() {
                    state
                        .metrics
                        .fallbacks
                        .with_label_values(&[&message.channel, step.channel.as_str()])
                        .inc();
                }
            }
        }
    }
    Ok(HttpResponse::NoContent().finish())
}
