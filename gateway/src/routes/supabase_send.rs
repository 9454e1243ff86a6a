//! `POST /hooks/supabase/send-sms` and `/hooks/supabase/send-email`: the Standard Webhooks signature checked
//! over the raw body first, the body mapped by `supabase::send`, the message queued once per
//! `metadata.uuid`. Answers: `200 {}` once durably queued; a send refused by the abuse limits `200` with
//! `{"error":{"http_code":429,...}}` (Supabase fails the user's call with 429); errors in that shape with
//! their own status (401 signature, 400 payload naming the field).

use super::ApiState;
use crate::handoff::HandoffOutcome;
use crate::supabase::payload::{SendEmailInput, SendSmsInput};
use crate::supabase::send::{self, Hook, HookMessage};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use chrono::TimeDelta;
use reclaim_common::auth::standard_webhooks::SignatureError;
use reclaim_common::json::{self, supabase_error_response, FieldError};
use reclaim_common::Db;

#[derive(Debug, thiserror::Error)]
pub enum SendHookError {
    #[error("signature refused: {0}")]
    Unauthorized(#[from] SignatureError),
    #[error(transparent)]
    Invalid(#[from] FieldError),
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl ResponseError for SendHookError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Invalid(_) => StatusCode::BAD_REQUEST,
            Self::Unexpected(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        let message = match self {
            Self::Unauthorized(reason) => format!("webhook signature refused: {reason}"),
            Self::Invalid(error) => error.to_string(),
            Self::Unexpected(error) => {
                tracing::error!(error = %error, "Supabase send hook could not queue");
                "internal error; see the server log".to_string()
            }
        };
        supabase_error_response(status, status, message)
    }
}

/// Supabase's send-sms hook.
#[utoipa::path(
    post,
    path = "/hooks/supabase/send-sms",
    request_body(content = Object, description = "Supabase Auth's SendSMSInput (metadata, user, sms), signed \
        the Standard Webhooks way"),
    responses(
        (status = 200, description = "`{}`: queued, or a retry of a call already queued; or \
            `{\"error\":{\"http_code\":429,...}}`: refused by the abuse limits", body = Object),
        (status = 400, description = "Malformed payload, the field named in `error.message`", body = Object),
        (status = 401, description = "Missing, wrong or stale signature (`gateway.supabase.hook_secrets`)", body = Object),
        (status = 500, description = "Internal error (`{\"error\": {\"http_code\", \"message\"}}`)", body = Object),
    ),
    tag = "supabase",
    security(())
)]
pub async fn receive_supabase_send_sms(
    request: HttpRequest,
    body: web::Bytes,
    state: web::Data<ApiState>,
    db: web::Data<Db>,
) -> Result<HttpResponse, SendHookError> {
    receive(Hook::SendSms, &request, &body, &state, &db).await
}

/// Supabase's send-email hook.
#[utoipa::path(
    post,
    path = "/hooks/supabase/send-email",
    request_body(content = Object, description = "Supabase Auth's SendEmailInput (metadata, user, \
        email_data), signed the Standard Webhooks way"),
    responses(
        (status = 200, description = "`{}`: queued, or a retry of a call already queued; or \
            `{\"error\":{\"http_code\":429,...}}`: refused by the abuse limits", body = Object),
        (status = 400, description = "Malformed payload or an email_action_type not supported yet, the \
            field named in `error.message`"),
        (status = 401, description = "Missing, wrong or stale signature (`gateway.supabase.hook_secrets`)", body = Object),
        (status = 500, description = "Internal error (`{\"error\": {\"http_code\", \"message\"}}`)", body = Object),
    ),
    tag = "supabase",
    security(())
)]
pub async fn receive_supabase_send_email(
    request: HttpRequest,
    body: web::Bytes,
    state: web::Data<ApiState>,
    db: web::Data<Db>,
) -> Result<HttpResponse, SendHookError> {
    receive(Hook::SendEmail, &request, &body, &state, &db).await
}

async fn receive(
    hook: Hook,
    request: &HttpRequest,
    body: &[u8],
    state: &ApiState,
    db: &Db,
) -> Result<HttpResponse, SendHookError> {
    let answer = answer(hook, request, body, state, db).await;
    let outcome = match &answer {
        Ok((_, outcome)) => *outcome,
        Err(SendHookError::Unauthorized(_)) => "unauthorized",
        Err(SendHookError::Invalid(_)) => "invalid",
        Err(SendHookError::Unexpected(_)) => "error",
    };
    state
        .metrics
        .supabase_hooks
        .with_label_values(&[hook.as_str(), outcome])
        .inc();
    answer.map(|(response, _)| response)
}

async fn answer(
    hook: Hook,
    request: &HttpRequest,
    body: &[u8],
    state: &ApiState,
    db: &Db,
) -> Result<(HttpResponse, &'static str), SendHookError> {
    // Replays are about real time: the wall clock, not the handlers' clock.
    let wall_clock = chrono::Utc::now().timestamp();
    state
        .supabase_verifier
        .verify(request.headers(), body, wall_clock)
        .inspect_err(|reason| {
            tracing::warn!(reason = %reason, supabase.hook = hook.as_str(), "Supabase send hook refused: signature");
        })?;
    let message = match hook {
        Hook::SendSms => json::parse::<SendSmsInput>(body).and_then(HookMessage::from_sms),
        Hook::SendEmail => json::parse::<SendEmailInput>(body)
            .and_then(|input| HookMessage::from_email(input, state.settings.supabase.email_links)),
    }
    .inspect_err(|e| {
        tracing::warn!(field = %e.field, supabase.hook = hook.as_str(), "Supabase send hook call refused");
    })?;
    let now = state.clock.now().naive_utc();
    let planned = message.plan(
        &state.settings,
        &state.templates,
        uuid::Uuid::now_v7().to_string(),
        now,
    )?;
    let (channel, to, kind) = (
        message.channel,
        message.destination.masked(),
        message.kind.clone(),
    );
    let outcome = send::queue_in_transaction(
        db,
        message,
        planned,
        state.keyring.clone(),
        state.limits.clone(),
        // Supabase retries within seconds; a uuid is remembered as long as any idempotency record.
        TimeDelta::hours(i64::from(state.settings.retention.idempotency_hours)),
    )
    .await
    .map_err(anyhow::Error::new)?;
    let json_body = |text: String| {
        HttpResponse::Ok()
            .content_type("application/json")
            .body(text)
    };
    Ok(match outcome {
        HandoffOutcome::Queued { id, answer } => {
            tracing::info!(message.id = %id, message.channel = %channel, message.to = %to,
                supabase.hook = hook.as_str(), supabase.type = %kind, "Supabase send hook message queued");
            (json_body(answer), "queued")
        }
        HandoffOutcome::Throttled { refusal, answer } => {
            tracing::info!(message.channel = %channel, message.to = %to, supabase.hook = hook.as_str(),
                supabase.type = %kind, limit.reason = refusal.reason.as_str(),
                "Supabase send hook message not sent: abuse limit");
            (json_body(answer), "throttled")
        }
        HandoffOutcome::Duplicate(first) => {
            tracing::info!(message.channel = %channel, message.to = %to, supabase.hook = hook.as_str(),
                supabase.type = %kind, "Supabase send hook retry: already answered");
            (reclaim_common::idempotency::replay(&first), "duplicate")
        }
    })
}
