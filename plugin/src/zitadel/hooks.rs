//! `/hooks/zitadel/set-password` (request execution) and `/hooks/zitadel/set-password/response` (response
//! execution). Each call: signature over the raw body → envelope → new password → decide → answer in
//! ZITADEL's terms (the message itself to let the call go on, error forwarding to refuse it).

use super::payload::{created_user_id, new_password, Envelope, NewPassword, Proof};
use crate::identity::{Identity, IdentityId};
use crate::password::Password;
use crate::passwords::{CheckOptions, Passwords, PasswordsError, Receipt, Recorded};
use crate::policy::{ChangeContext, MustChangeReason};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use anyhow::Context;
use reclaim_common::auth::zitadel::{self, SignatureError, SIGNATURE_HEADER};
use reclaim_common::idempotency::IdempotencyKey;
use reclaim_common::json::{error_response, FieldError};
use reclaim_common::settings::{PluginZitadelSettings, ZitadelCommitOn};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::time::Duration;

/// What the hooks need, shared by all workers.
#[derive(Clone)]
pub struct ZitadelHooks {
    pub passwords: Passwords,
    pub settings: PluginZitadelSettings,
}

/// The hooks' OpenAPI paths, merged into the plugin's document.
#[derive(utoipa::OpenApi)]
#[openapi(paths(set_password, set_password_response))]
pub struct HooksDoc;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/hooks/zitadel/set-password", web::post().to(set_password))
        .route(
            "/hooks/zitadel/set-password/response",
            web::post().to(set_password_response),
        );
}

/// Why a set-password call was not decided. A non-2xx answer fails the target in ZITADEL (and the call, when
/// the target has `interruptOnError`); its body only reaches ZITADEL's log.
#[derive(Debug, thiserror::Error)]
pub enum SetPasswordError {
    #[error("ZITADEL-Signature refused: {0}")]
    Unauthorized(SignatureError),
    #[error(transparent)]
    BadRequest(#[from] FieldError),
    #[error("password checks saturated")]
    Busy(Duration),
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl actix_web::ResponseError for SetPasswordError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Unexpected(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            Self::Unauthorized(_) => error_response(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "missing, wrong or stale ZITADEL-Signature",
                None,
            ),
            Self::BadRequest(field) => actix_web::ResponseError::error_response(field),
            Self::Busy(retry_after) => crate::routes::busy_response(*retry_after),
            Self::Unexpected(error) => {
                tracing::error!(error = ?error, "ZITADEL hook failed");
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

impl From<PasswordsError> for SetPasswordError {
    fn from(error: PasswordsError) -> Self {
        match error {
            PasswordsError::Saturated { retry_after } => Self::Busy(retry_after),
            other => Self::Unexpected(anyhow::Error::new(other)),
        }
    }
}

/// Which hook, for the metrics and the logs.
#[derive(Debug, Clone, Copy)]
enum Hook {
    Request,
    Response,
}

impl Hook {
    fn name(self) -> &'static str {
        match self {
            Self::Request => "zitadel.set_password",
            Self::Response => "zitadel.set_password.response",
        }
    }
}

/// The request execution: refuse a password the policy refuses, else return the request message unchanged
/// (recording it at once under `commit_on = "request"`).
#[utoipa::path(
    post,
    path = "/hooks/zitadel/set-password",
    tag = "zitadel",
    request_body(content = Object, description = "ZITADEL's Actions v2 call (fullMethod, request or response, userID), signed with ZITADEL-Signature"),
    responses(
        (status = 200, description = "Allowed: the request message, unchanged; or refused: ZITADEL's error answer with the policy's message", body = Object),
        (status = 400, description = "Malformed call; `error.field` names the field"),
        (status = 401, description = "Missing, wrong or stale ZITADEL-Signature (`plugin.zitadel.signing_keys`)"),
        (status = 503, description = "Password hashing saturated; see Retry-After"),
    ),
    security(())
)]
async fn set_password(
    req: HttpRequest,
    body: web::Bytes,
    hooks: web::Data<ZitadelHooks>,
) -> Result<HttpResponse, SetPasswordError> {
    let result = decide_request(&req, &body, &hooks).await;
    count(&hooks, Hook::Request, &result);
    result.map(|(_, response)| response)
}

/// The response execution: ZITADEL saved the password, so it enters the history; the response message goes
/// back unchanged.
#[utoipa::path(
    post,
    path = "/hooks/zitadel/set-password/response",
    tag = "zitadel",
    request_body(content = Object, description = "ZITADEL's Actions v2 call (fullMethod, request or response, userID), signed with ZITADEL-Signature"),
    responses(
        (status = 200, description = "Recorded: the response message, unchanged", body = Object),
        (status = 400, description = "Malformed call; `error.field` names the field"),
        (status = 401, description = "Missing, wrong or stale ZITADEL-Signature (`plugin.zitadel.signing_keys`)"),
        (status = 503, description = "Password hashing saturated; see Retry-After"),
    ),
    security(())
)]
async fn set_password_response(
    req: HttpRequest,
    body: web::Bytes,
    hooks: web::Data<ZitadelHooks>,
) -> Result<HttpResponse, SetPasswordError> {
    let result = decide_response(&req, &body, &hooks).await;
    count(&hooks, Hook::Response, &result);
    result.map(|(_, response)| response)
}

fn count(
    hooks: &ZitadelHooks,
    hook: Hook,
    result: &Result<(&'static str, HttpResponse), SetPasswordError>,
) {
    let outcome = match result {
        Ok((outcome, _)) => outcome,
        Err(SetPasswordError::Unauthorized(_)) => "unauthorized",
        Err(SetPasswordError::BadRequest(_)) => "bad_request",
        Err(_) => "failed",
    };
    hooks
        .passwords
        .metrics()
        .hook_calls
        .with_label_values(&[hook.name(), outcome])
        .inc();
}

/// Verifies the signature over the raw body, then reads the envelope.
fn authenticate(
    req: &HttpRequest,
    body: &[u8],
    hooks: &ZitadelHooks,
) -> Result<Envelope, SetPasswordError> {
    let header = req
        .headers()
        .get(SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok());
    let now = hooks.passwords.clock().now().timestamp();
    let tolerance = i64::try_from(hooks.settings.signature_tolerance_seconds).unwrap_or(i64::MAX);
    zitadel::verify(header, body, &hooks.settings.signing_keys, now, tolerance).map_err(|e| {
        tracing::warn!(reason = %e, "ZITADEL hook refused: signature");
        SetPasswordError::Unauthorized(e)
    })?;
    Ok(reclaim_common::json::parse(body)?)
}

/// The identity whose password is set, with the contacts the call gives it (read from the request message,
/// which the response execution carries too); a call without contacts leaves the stored ones.
fn identity(user_id: &str, field: &str, found: &NewPassword) -> Result<Identity, FieldError> {
    let mut identity = IdentityId::parse(user_id)
        .map(Identity::new)
        .map_err(|m| FieldError::new(field, m))?;
    identity.email.clone_from(&found.contacts.email);
    identity.phone.clone_from(&found.contacts.phone);
    Ok(identity)
}

fn password(found: &NewPassword, field: &str) -> Result<Password, FieldError> {
    Password::parse(found.password.clone()).map_err(|m| FieldError::new(field, m))
}

fn context(proof: Proof) -> ChangeContext {
    match proof {
        Proof::CurrentPassword => ChangeContext::Voluntary,
        Proof::VerificationCode => ChangeContext::Recovery,
        // Not the user's own choice, so not held to the minimum age.
        Proof::Privileged => ChangeContext::Forced,
    }
}

/// The message ZITADEL unmarshals back into the call: returned as received.
fn message(value: Option<&Value>) -> HttpResponse {
    HttpResponse::Ok().json(value.cloned().unwrap_or_else(|| json!({})))
}

async fn decide_request(
    req: &HttpRequest,
    body: &[u8],
    hooks: &ZitadelHooks,
) -> Result<(&'static str, HttpResponse), SetPasswordError> {
    let envelope = authenticate(req, body, hooks)?;
    let Some(found) = new_password(&envelope)? else {
        return Ok(("passed", message(envelope.request.as_ref())));
    };
    let candidate = password(&found, "request.newPassword.password")?;
    let Some(user_id) = &found.user_id else {
        // A user being created has no history yet: nothing to check; the response execution records it.
        return Ok(("allowed", message(envelope.request.as_ref())));
    };
    let identity = identity(user_id, "request.userId", &found)?;
    let options = CheckOptions {
        context: context(found.proof),
        ..CheckOptions::default()
    };
    let decision = hooks
        .passwords
        .check(&identity, &candidate, &options)
        .await?;
    if !decision.allowed {
        let text: Vec<&str> = decision
            .violations
            .iter()
            .map(|v| v.message.as_str())
            .collect();
        tracing::info!(identity.id = %identity.id, method = %envelope.full_method, "ZITADEL password change refused");
        // ZITADEL fails the API call with this status and message (error forwarding).
        return Ok((
            "refused",
            HttpResponse::Ok().json(json!({
                "forwardedStatusCode": 400,
                "forwardedErrorMessage": text.join(" "),
            })),
        ));
    }
    if hooks.settings.commit_on == ZitadelCommitOn::Request {
        commit(hooks, &identity, &candidate, &found, body).await?;
    }
    Ok(("allowed", message(envelope.request.as_ref())))
}

async fn decide_response(
    req: &HttpRequest,
    body: &[u8],
    hooks: &ZitadelHooks,
) -> Result<(&'static str, HttpResponse), SetPasswordError> {
    let envelope = authenticate(req, body, hooks)?;
    let reply = message(envelope.response.as_ref());
    let Some(found) = new_password(&envelope)? else {
        return Ok(("passed", reply));
    };
    // Under `commit_on = "request"` the request hook recorded it, unless the user id was only known now.
    if hooks.settings.commit_on == ZitadelCommitOn::Request && found.user_id.is_some() {
        return Ok(("passed", reply));
    }
    let Some(user_id) = found
        .user_id
        .clone()
        .or_else(|| created_user_id(envelope.response.as_ref()))
    else {
        return Err(FieldError::new(
            "response.userId",
            "is required to record a new user's password",
        )
        .into());
    };
    let identity = identity(&user_id, "request.userId", &found)?;
    let candidate = password(&found, "request.newPassword.password")?;
    commit(hooks, &identity, &candidate, &found, body).await?;
    Ok(("committed", reply))
}

/// Records the password once per signed body (ZITADEL's retries repeat the body with a new signature), then
/// applies `changeRequired`.
async fn commit(
    hooks: &ZitadelHooks,
    identity: &Identity,
    candidate: &Password,
    found: &NewPassword,
    body: &[u8],
) -> Result<(), SetPasswordError> {
    let key = IdempotencyKey::parse(&format!("zitadel:{:x}", Sha256::digest(body)))
        .map_err(|m| anyhow::anyhow!(m))
        .context("building the receipt key")?;
    let receipt =
        Receipt::new(Passwords::record_scope(&identity.id), key, body).about(identity.id.as_str());
    let recorded = hooks
        .passwords
        .record_once(identity, candidate, None, context(found.proof), receipt)
        .await?;
    if let Recorded::New(_) = recorded {
        if found.change_required {
            hooks
                .passwords
                .force_change(&identity.id, MustChangeReason::Admin)
                .await?;
        }
    }
    Ok(())
}
