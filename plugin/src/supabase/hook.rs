//! `POST /hooks/supabase/password-verification`: signature checked over the raw body, then parsed, then
//! decided. The signature is checked against the wall clock (replays are about real time), the decision
//! uses the plugin's clock.

use super::decide::{decide, Attempt};
use super::payload::{VerificationAnswer, VerificationAttempt};
use crate::identity::{Identity, IdentityId};
use crate::passwords::PasswordsError;
use crate::Passwords;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use reclaim_common::auth::standard_webhooks::{SignatureError, Verifier};
use reclaim_common::idempotency::{self, IdempotencyKey, Waited};
use reclaim_common::json::{self, supabase_error_response, FieldError};
use reclaim_common::settings::PluginSupabaseSettings;

/// What the hook needs, shared by all workers.
#[derive(Clone)]
pub struct SupabaseHooks {
    pub passwords: Passwords,
    pub settings: PluginSupabaseSettings,
    pub verifier: Verifier,
}

impl SupabaseHooks {
    pub fn new(passwords: Passwords, settings: &PluginSupabaseSettings) -> Self {
        Self {
            passwords,
            verifier: settings.verifier(),
            settings: settings.clone(),
        }
    }
}

/// The hook's OpenAPI path, merged into the plugin's document.
#[derive(utoipa::OpenApi)]
#[openapi(paths(verify_password_attempt))]
pub struct HookDoc;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route(
        "/hooks/supabase/password-verification",
        web::post().to(verify_password_attempt),
    );
}

#[derive(Debug, thiserror::Error)]
pub enum PasswordVerificationError {
    #[error("signature refused: {0}")]
    Unauthorized(#[from] SignatureError),
    #[error(transparent)]
    Invalid(#[from] FieldError),
    #[error(transparent)]
    Unexpected(#[from] PasswordsError),
    /// The answer to a retry could not be remembered or replayed.
    #[error(transparent)]
    Retry(#[from] anyhow::Error),
}

impl ResponseError for PasswordVerificationError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Invalid(_) => StatusCode::BAD_REQUEST,
            Self::Unexpected(PasswordsError::Saturated { .. }) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Unexpected(_) | Self::Retry(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        let message = match self {
            Self::Unauthorized(reason) => format!("webhook signature refused: {reason}"),
            Self::Invalid(error) => error.to_string(),
            Self::Unexpected(error) => {
                tracing::error!(error = %error, "Supabase password verification hook could not decide");
                "internal error; see the server log".to_string()
            }
            Self::Retry(error) => {
                tracing::error!(error = %format!("{error:#}"), "Supabase password verification hook could not answer a retry");
                "internal error; see the server log".to_string()
            }
        };
        supabase_error_response(status, status, message)
    }
}

/// Supabase Auth's password verification attempt hook: a login with an expired password (or one that must
/// change) is refused.
#[utoipa::path(
    post,
    path = "/hooks/supabase/password-verification",
    tag = "supabase",
    request_body(content = Object, description = "Supabase Auth's PasswordVerificationAttemptInput (user_id, valid), signed the Standard Webhooks way"),
    responses(
        (status = 200, description = "`{\"decision\": \"continue\"}` or `{\"decision\": \"reject\", \"message\": ..., \"should_logout_user\": ...}`", body = Object),
        (status = 400, description = "Malformed payload (`{\"error\": {\"http_code\", \"message\"}}`)", body = Object),
        (status = 401, description = "Missing, wrong or stale signature (`plugin.supabase.hook_secrets`)", body = Object),
        (status = 413, description = "The body is larger than `http.max_body_bytes`"),
        (status = 500, description = "Internal error (`{\"error\": {\"http_code\", \"message\"}}`)", body = Object),
        (status = 503, description = "Password hashing saturated (`{\"error\": {\"http_code\", \"message\"}}`)", body = Object),
    ),
    security(())
)]
async fn verify_password_attempt(
    req: HttpRequest,
    body: web::Bytes,
    hooks: web::Data<SupabaseHooks>,
) -> Result<HttpResponse, PasswordVerificationError> {
    let answer = answer_attempt(&req, &body, &hooks).await;
    let outcome = match &answer {
        Ok(VerificationAnswer::Continue) => "continue",
        Ok(VerificationAnswer::Reject { .. }) => "reject",
        Err(PasswordVerificationError::Unauthorized(_)) => "unauthorized",
        Err(PasswordVerificationError::Invalid(_)) => "invalid",
        Err(PasswordVerificationError::Unexpected(_) | PasswordVerificationError::Retry(_)) => {
            "error"
        }
    };
    hooks
        .passwords
        .metrics()
        .supabase_hooks
        .with_label_values(&["password-verification", outcome])
        .inc();
    Ok(HttpResponse::Ok().json(answer?))
}

async fn answer_attempt(
    req: &HttpRequest,
    body: &[u8],
    hooks: &SupabaseHooks,
) -> Result<VerificationAnswer, PasswordVerificationError> {
    let wall_clock = chrono::Utc::now().timestamp();
    hooks
        .verifier
        .verify(req.headers(), body, wall_clock)
        .inspect_err(|reason| {
            tracing::warn!(reason = %reason, "Supabase password verification hook refused: signature");
        })?;
    let attempt = parse(body, &hooks.settings)?;
    // Supabase retries a call that timed out; a retry must not take a second grace login. The answer is
    // remembered under the call's `metadata.uuid` and replayed.
    let claim = match attempt
        .invocation
        .as_deref()
        .and_then(|uuid| IdempotencyKey::parse(uuid).ok())
    {
        None => None,
        Some(key) => {
            let once = idempotency::Request::new(RETRY_SCOPE, key, b"")
                .about(attempt.identity.id.as_str());
            match idempotency::claim_or_wait(hooks.passwords.db(), &once, RETRY_WAIT)
                .await
                .map_err(anyhow::Error::new)?
            {
                Waited::Claimed(claim) => Some(claim),
                Waited::Answered(first) => {
                    return serde_json::from_str(&first.response_body).map_err(|e| {
                        anyhow::anyhow!("a remembered answer does not read: {e}").into()
                    })
                }
                Waited::Pending { .. } => {
                    return Err(anyhow::anyhow!(
                        "the first call of this retry is still being decided"
                    )
                    .into())
                }
            }
        }
    };
    let now = hooks.passwords.clock().now();
    let answer = decide(
        &hooks.passwords,
        &attempt,
        hooks.settings.logout_on_reject,
        now,
    )
    .await?;
    if let Some(claim) = claim {
        let body = serde_json::to_string(&answer).map_err(anyhow::Error::new)?;
        claim
            .complete(200, body)
            .await
            .map_err(anyhow::Error::new)?;
    }
    Ok(answer)
}

/// Where answers are remembered for Supabase's retries, and how long a retry waits for the first call.
const RETRY_SCOPE: &str = "plugin.supabase.password-verification";
const RETRY_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

fn parse(body: &[u8], settings: &PluginSupabaseSettings) -> Result<Attempt, FieldError> {
    let parsed: VerificationAttempt = json::parse(body)?;
    let id = IdentityId::parse(&parsed.user_id).map_err(|m| FieldError::new("user_id", m))?;
    let mut identity = Identity::new(id);
    identity.schema_id = Some(settings.schema_id.clone());
    Ok(Attempt {
        identity,
        valid: parsed.valid,
        invocation: parsed.metadata.and_then(|m| m.uuid),
    })
}
