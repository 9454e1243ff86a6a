//! `POST /hooks/kratos/courier`: Kratos's HTTP courier (email and SMS). Kratos authenticated, the body
//! mapped by `kratos::courier`, the message queued once per retry window; 2xx once it is durably queued.

use super::messages::internal;
use super::ApiState;
use crate::kratos::courier::{self, CourierMessage, CourierOutcome};
use crate::kratos::payload::CourierBody;
use actix_web::http::header::{HeaderValue, WWW_AUTHENTICATE};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use chrono::TimeDelta;
use reclaim_common::auth::AuthError;
use reclaim_common::idempotency;
use reclaim_common::json::{error_response, FieldError};
use reclaim_common::settings::KratosAuth;
use reclaim_common::Db;

#[derive(Debug, thiserror::Error)]
pub enum CourierError {
    #[error("not authenticated: {0}")]
    Unauthorized(AuthError, KratosAuth),
    #[error(transparent)]
    Invalid(#[from] FieldError),
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl ResponseError for CourierError {
    fn status_code(&self) -> StatusCode {
        match self {
            CourierError::Unauthorized(..) => StatusCode::UNAUTHORIZED,
            CourierError::Invalid(_) => StatusCode::BAD_REQUEST,
            CourierError::Unexpected(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            CourierError::Unauthorized(_, scheme) => {
                let mut response = error_response(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "missing or wrong Kratos credentials (gateway.kratos)",
                    None,
                );
                if *scheme == KratosAuth::Basic {
                    response.headers_mut().insert(
                        WWW_AUTHENTICATE,
                        HeaderValue::from_static("Basic realm=\"reclaim\""),
                    );
                }
                response
            }
            // Kratos logs the first KiB of a refused answer: the field and the reason fit.
            CourierError::Invalid(e) => e.error_response(),
            CourierError::Unexpected(e) => internal(e),
        }
    }
}

/// Label of a call refused before its template type was known.
const UNKNOWN: &str = "unknown";

/// Accepts one message of Kratos's courier.
#[utoipa::path(
    post,
    path = "/hooks/kratos/courier",
    request_body(content = Object, description = "Kratos's courier HTTP body (recipient, subject, body, \
        html_body, template_type, template_data, message_type, request_headers)"),
    responses(
        (status = 202, description = "Queued; or a retry of a message queued within the dedupe window; or refused by the abuse limits (`{\"id\": null, \"throttled\": <reason>}`), which Kratos must not retry", body = Object),
        (status = 400, description = "The message cannot be delivered as asked; the field is named"),
        (status = 401, description = "Missing or wrong Kratos credentials (`gateway.kratos`)"),
    ),
    tag = "kratos",
    security(())
)]
pub async fn receive_kratos_courier(
    request: HttpRequest,
    body: web::Bytes,
    state: web::Data<ApiState>,
    db: web::Data<Db>,
) -> Result<HttpResponse, CourierError> {
    let settings = &state.settings;
    let count = |template_type: &str, outcome: &str| {
        state
            .metrics
            .kratos_courier
            .with_label_values(&[template_type, outcome])
            .inc();
    };
    if let Err(reason) = settings.kratos.credentials().check(request.headers()) {
        tracing::warn!(reason = %reason, "Kratos courier call refused: credentials");
        count(UNKNOWN, "refused");
        return Err(CourierError::Unauthorized(reason, settings.kratos.auth));
    }
    let parsed = reclaim_common::json::parse::<CourierBody>(&body)
        .and_then(|body| CourierMessage::parse(body, &settings.messages.default_locale));
    let message = parsed.inspect_err(|e| {
        tracing::warn!(field = %e.field, "Kratos courier message refused");
        count(UNKNOWN, "invalid");
    })?;
    let template_type = message.template_type.as_str();
    let now = state.clock.now().naive_utc();
    let id = uuid::Uuid::now_v7().to_string();
    let planned = message
        .plan(settings, &state.templates, id, now)
        .inspect_err(|e| {
            tracing::warn!(field = %e.field, kratos.template_type = template_type, "Kratos courier message refused");
            count(template_type, "invalid");
        })?;
    let window = TimeDelta::seconds(
        i64::try_from(settings.kratos.dedupe_window_seconds).unwrap_or(i64::MAX),
    );
    let (channel, to) = (message.channel, message.destination.masked());
    let outcome = courier::queue_in_transaction(
        db.get_ref(),
        message,
        planned,
        state.keyring.clone(),
        state.limits.clone(),
        window,
    )
    .await
    .map_err(anyhow::Error::new)?;
    match outcome {
        CourierOutcome::Queued { id, answer } => {
            state.doorbell.ring();
            tracing::info!(message.id = %id, message.channel = %channel, message.to = %to,
                kratos.template_type = template_type, "Kratos courier message queued");
            count(template_type, "queued");
            Ok(HttpResponse::Accepted()
                .content_type("application/json")
                .body(answer))
        }
        CourierOutcome::Throttled { refusal, answer } => {
            tracing::info!(message.channel = %channel, message.to = %to,
                kratos.template_type = template_type, limit.reason = refusal.reason.as_str(),
                "Kratos courier message not sent: abuse limit");
            count(template_type, "throttled");
            Ok(HttpResponse::Accepted()
                .content_type("application/json")
                .body(answer))
        }
        CourierOutcome::Duplicate(first) => {
            tracing::info!(message.channel = %channel, message.to = %to,
                kratos.template_type = template_type, "Kratos courier retry: already queued");
            count(template_type, "duplicate");
            Ok(idempotency::replay(&first))
        }
    }
}
