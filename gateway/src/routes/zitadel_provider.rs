//! `POST /hooks/zitadel/sms` and `/hooks/zitadel/email`: ZITADEL's HTTP SMS and email providers. The
//! `ZITADEL-Signature` checked over the raw body, the body mapped by `zitadel::notification`, the message
//! queued once per retry window; 2xx once it is durably queued (ZITADEL ignores the body).

use super::messages::internal;
use super::ApiState;
use crate::channel::Channel;
use crate::handoff::{self, HandoffOutcome};
use crate::zitadel::notification::ZitadelMessage;
use crate::zitadel::payload::ProviderBody;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use chrono::TimeDelta;
use reclaim_common::auth::zitadel::{self, SignatureError, SIGNATURE_HEADER};
use reclaim_common::idempotency;
use reclaim_common::json::{error_response, FieldError};
use reclaim_common::Db;

#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("not authenticated: {0}")]
    Unauthorized(SignatureError),
    #[error(transparent)]
    Invalid(#[from] FieldError),
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl ResponseError for ProviderError {
    fn status_code(&self) -> StatusCode {
        match self {
            ProviderError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ProviderError::Invalid(_) => StatusCode::BAD_REQUEST,
            ProviderError::Unexpected(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            ProviderError::Unauthorized(_) => error_response(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "missing, wrong or stale ZITADEL-Signature (gateway.zitadel.signing_keys)",
                None,
            ),
            ProviderError::Invalid(e) => e.error_response(),
            ProviderError::Unexpected(e) => internal(e),
        }
    }
}

/// Accepts one notification of ZITADEL's HTTP SMS provider.
#[utoipa::path(
    post,
    path = "/hooks/zitadel/sms",
    request_body(content = Object, description = "ZITADEL's HTTP provider body (contextInfo with \
        recipientPhoneNumber, templateData, args)"),
    responses(
        (status = 202, description = "Queued; or a retry of a message queued within the dedupe window; or refused by the abuse limits (`{\"id\": null, \"throttled\": <reason>}`), which ZITADEL must not retry", body = Object),
        (status = 400, description = "The message cannot be delivered; the field is named"),
        (status = 401, description = "Missing, wrong or stale ZITADEL-Signature (`gateway.zitadel`)"),
    ),
    tag = "zitadel",
    security(())
)]
pub async fn receive_zitadel_sms(
    request: HttpRequest,
    body: web::Bytes,
    state: web::Data<ApiState>,
    db: web::Data<Db>,
) -> Result<HttpResponse, ProviderError> {
    receive(Channel::Sms, request, body, state, db).await
}

/// Accepts one notification of ZITADEL's HTTP email provider.
#[utoipa::path(
    post,
    path = "/hooks/zitadel/email",
    request_body(content = Object, description = "ZITADEL's HTTP provider body (contextInfo with \
        recipientEmailAddress, templateData, args)"),
    responses(
        (status = 202, description = "Queued; or a retry of a message queued within the dedupe window; or refused by the abuse limits (`{\"id\": null, \"throttled\": <reason>}`), which ZITADEL must not retry", body = Object),
        (status = 400, description = "The message cannot be delivered; the field is named"),
        (status = 401, description = "Missing, wrong or stale ZITADEL-Signature (`gateway.zitadel`)"),
    ),
    tag = "zitadel",
    security(())
)]
pub async fn receive_zitadel_email(
    request: HttpRequest,
    body: web::Bytes,
    state: web::Data<ApiState>,
    db: web::Data<Db>,
) -> Result<HttpResponse, ProviderError> {
    receive(Channel::Email, request, body, state, db).await
}

async fn receive(
    channel: Channel,
    request: HttpRequest,
    body: web::Bytes,
    state: web::Data<ApiState>,
    db: web::Data<Db>,
) -> Result<HttpResponse, ProviderError> {
    let settings = &state.settings;
    let hook = channel.as_str();
    let count = |outcome: &str| {
        state
            .metrics
            .zitadel_provider
            .with_label_values(&[hook, outcome])
            .inc();
    };
    let header = request
        .headers()
        .get(SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok());
    let tolerance = i64::try_from(settings.zitadel.signature_tolerance_seconds).unwrap_or(i64::MAX);
    let now = state.clock.now();
    if let Err(reason) = zitadel::verify(
        header,
        &body,
        &settings.zitadel.signing_keys,
        now.timestamp(),
        tolerance,
    ) {
        tracing::warn!(reason = %reason, zitadel.hook = hook, "ZITADEL provider call refused: signature");
        count("refused");
        return Err(ProviderError::Unauthorized(reason));
    }
    let id = uuid::Uuid::now_v7().to_string();
    let now = now.naive_utc();
    let planned = reclaim_common::json::parse::<ProviderBody>(&body)
        .and_then(|body| ZitadelMessage::parse(body, channel))
        .and_then(|message| {
            let planned = message.plan(settings, &state.templates, id, now)?;
            Ok((message, planned))
        });
    let (message, planned) = planned.inspect_err(|e| {
        tracing::warn!(field = %e.field, zitadel.hook = hook, "ZITADEL notification refused");
        count("invalid");
    })?;
    let window = TimeDelta::seconds(
        i64::try_from(settings.zitadel.dedupe_window_seconds).unwrap_or(i64::MAX),
    );
    let to = message.destination.masked();
    let event = message.event_type.clone();
    let outcome = handoff::queue_in_transaction(
        db.get_ref(),
        message.handoff(),
        planned,
        state.keyring.clone(),
        state.limits.clone(),
        window,
    )
    .await
    .map_err(anyhow::Error::new)?;
    match outcome {
        HandoffOutcome::Queued { id, answer } => {
            state.doorbell.ring();
            tracing::info!(message.id = %id, message.channel = hook, message.to = %to,
                zitadel.event_type = %event, "ZITADEL notification queued");
            count("queued");
            Ok(accepted(answer))
        }
        HandoffOutcome::Throttled { refusal, answer } => {
            tracing::info!(message.channel = hook, message.to = %to, zitadel.event_type = %event,
                limit.reason = refusal.reason.as_str(), "ZITADEL notification not sent: abuse limit");
            count("throttled");
            Ok(accepted(answer))
        }
        HandoffOutcome::Duplicate(first) => {
            tracing::info!(message.channel = hook, message.to = %to, zitadel.event_type = %event,
                "ZITADEL notification retry: already queued");
            count("duplicate");
            Ok(idempotency::replay(&first))
        }
    }
}

fn accepted(answer: String) -> HttpResponse {
    HttpResponse::Accepted()
        .content_type("application/json")
        .body(answer)
}
