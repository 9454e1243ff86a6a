//! `POST /hooks/supabase/send-sms` and `/hooks/supabase/send-email`: the Standard Webhooks signature checked
//! over the raw body first, the body mapped by `supabase::send`, the message queued once per
//! `metadata.uuid`. Answers: `200 {}` once durably queued; a send refused by the abuse limits `200` with
//! `{"error":{"http_code":429,...}}` (Supabase fails the user's call with 429); errors in that shape with
//! their own status (401 signature, 400 payload naming the field).

use super::ApiState;
use crate::handoff::HandoffOutcome;
use crate::supabase::payload::{SendEmailInput, SendSmsInput};
use crate::supabase::plugin_link::ReportOutcome;
use crate::supabase::send::{self, Hook, HookMessage};
use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use chrono::TimeDelta;
use reclaim_common::auth::standard_webhooks::SignatureError;
use reclaim_common::json::{self, supabase_error_response, FieldError};
use reclaim_common::Db;

/// Seconds Supabase is asked to wait before retrying when the plugin could not be told of a change.
const PLUGIN_RETRY_AFTER: &str = "2";

#[derive(Debug, thiserror::Error)]
pub enum SendHookError {
    #[error("signature refused: {0}")]
    Unauthorized(#[from] SignatureError),
    #[error(transparent)]
    Invalid(#[from] FieldError),
    /// The plugin could not be told of a password change (unreachable, timed out, 5xx): Supabase retries.
    #[error("the password change could not be reported to the plugin; retry")]
    PluginUnavailable,
    /// The plugin refused the report (a wrong `gateway.supabase.plugin_token`, a field): retrying will not
    /// help.
    #[error("the password change was refused by the plugin")]
    PluginRefused,
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl ResponseError for SendHookError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Invalid(_) => StatusCode::BAD_REQUEST,
            Self::PluginUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::PluginRefused | Self::Unexpected(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        let message = match self {
            Self::Unauthorized(reason) => format!("webhook signature refused: {reason}"),
            Self::Invalid(error) => error.to_string(),
            Self::PluginUnavailable => {
                // Supabase retries a 503 only when it carries `retry-after`.
                let mut response = supabase_error_response(status, status, self.to_string());
                response.headers_mut().insert(
                    header::RETRY_AFTER,
                    header::HeaderValue::from_static(PLUGIN_RETRY_AFTER),
                );
                return response;
            }
            Self::PluginRefused => "internal error; see the server log".to_string(),
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
        (status = 500, description = "Internal error, or the plugin refused a reported password change (see the \
            log); nothing queued (`{\"error\": {\"http_code\", \"message\"}}`)", body = Object),
        (status = 503, description = "The plugin could not be told of a password change; nothing queued, \
            `retry-after: 2` so Supabase retries", body = Object),
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
        Err(SendHookError::PluginUnavailable) => "plugin_unavailable",
        Err(SendHookError::PluginRefused) => "plugin_refused",
        Err(SendHookError::Unexpected(_)) => "error",
    };
    state
        .metrics
        .supabase_hooks
        .with_label_values(&[hook.as_str(), outcome])
        .inc();
    answer.map(|(response, _)| response)
}

/// The send-email type after which the plugin is told the password changed.
const PASSWORD_CHANGED: &str = "password_changed_notification";

/// Tells the plugin (when linked) that `input`'s user changed their password, before the email is queued: if
/// it cannot be told, nothing is queued and Supabase retries or gives up.
async fn report_change(
    state: &ApiState,
    input: &SendEmailInput,
    message: &HookMessage,
) -> Result<(), SendHookError> {
    let outcome = state.supabase_plugin.report(input).await;
    state
        .metrics
        .supabase_change_reports
        .with_label_values(&[outcome.as_str()])
        .inc();
    match outcome {
        ReportOutcome::Off | ReportOutcome::Reported => Ok(()),
        ReportOutcome::Unavailable(reason) => {
            tracing::warn!(identity.id = %message.identity_id, reason = %reason,
                "Supabase password change not reported: the plugin is unavailable; asking Supabase to retry");
            Err(SendHookError::PluginUnavailable)
        }
        ReportOutcome::Refused { status, field } => {
            tracing::error!(identity.id = %message.identity_id, plugin.status = status, field = %field,
                "Supabase password change refused by the plugin: check {field}");
            Err(SendHookError::PluginRefused)
        }
    }
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
    let mut change = None;
    let message = match hook {
        Hook::SendSms => json::parse::<SendSmsInput>(body).and_then(HookMessage::from_sms),
        Hook::SendEmail => json::parse::<SendEmailInput>(body).and_then(|input| {
            if input.email_data.email_action_type.trim() == PASSWORD_CHANGED {
                change = Some(input.clone());
            }
            HookMessage::from_email(input, state.settings.supabase.email_links)
        }),
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
    if let Some(input) = &change {
        report_change(state, input, &message).await?;
    }
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
            state.doorbell.ring();
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
