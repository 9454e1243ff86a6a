//! A hook call as the handlers receive it: Kratos authenticated (API key or basic auth, as configured), the
//! body parsed, the identity and locale read from it, and the trigger id Kratos repeats on its retries.

use super::messages::AdapterMessage;
use super::payload::{HookBody, KratosIdentity};
use super::response::{self, Target};
use crate::identity::{Identity, IdentityId};
use crate::policy::Locale;
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse};
use reclaim_common::auth::AuthError;
use reclaim_common::idempotency::IdempotencyKey;
use reclaim_common::settings::KratosSettings;
use serde_json::Value;

/// Kratos's idempotency header.
const TRIGGER_ID: &str = "Ory-Webhook-Trigger-ID";

/// Why a hook call could not be handled as asked.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("not authenticated: {0}")]
    Unauthorized(AuthError),
    #[error("bad request: {0}")]
    BadRequest(String, Locale),
}

impl actix_web::ResponseError for HookError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::BadRequest(..) => StatusCode::BAD_REQUEST,
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            // No `messages`: there is nothing Kratos should show the user.
            Self::Unauthorized(_) => reclaim_common::json::error_response(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "missing or wrong Kratos credentials",
                None,
            ),
            Self::BadRequest(_, locale) => response::interrupt(
                StatusCode::BAD_REQUEST,
                Target::Global,
                &[AdapterMessage::InvalidRequest.ui(*locale)],
            ),
        }
    }
}

/// A parsed, authenticated hook call.
pub(super) struct Call {
    pub body: HookBody,
    pub identity: Identity,
    pub locale: Locale,
    /// `Ory-Webhook-Trigger-ID`: constant across Kratos's retries of one hook call.
    pub trigger: Option<IdempotencyKey>,
}

/// Kratos's credentials on a hook request, as `plugin.kratos.auth` says (compared in constant time).
pub(super) fn authenticate(req: &HttpRequest, settings: &KratosSettings) -> Result<(), AuthError> {
    settings.credentials().check(req.headers())
}

/// Authenticates and parses a hook call; messages default to `fallback` when neither the body nor the request
/// names a language we have.
pub(super) fn parse_call(
    req: &HttpRequest,
    bytes: &[u8],
    settings: &KratosSettings,
    fallback: Locale,
) -> Result<Call, HookError> {
    authenticate(req, settings).map_err(|e| {
        tracing::warn!(reason = %e, "Kratos hook refused: credentials");
        HookError::Unauthorized(e)
    })?;
    let header_locale = req
        .headers()
        .get(actix_web::http::header::ACCEPT_LANGUAGE)
        .and_then(|v| v.to_str().ok());
    let body: HookBody = reclaim_common::json::parse(bytes).map_err(|e| {
        tracing::warn!(field = %e.field, "Kratos hook body refused");
        HookError::BadRequest(e.to_string(), Locale::negotiate(header_locale, fallback))
    })?;
    let locale = Locale::negotiate(body.accept_language().or(header_locale), fallback);
    let identity = identity_of(&body.identity, settings)
        .map_err(|message| HookError::BadRequest(format!("identity.id: {message}"), locale))?;
    let trigger = IdempotencyKey::from_headers(req.headers(), TRIGGER_ID)
        .map_err(|e| HookError::BadRequest(e.to_string(), locale))?;
    Ok(Call {
        body,
        identity,
        locale,
        trigger,
    })
}

/// Our [`Identity`] for a Kratos identity: id, schema, contacts at the configured trait pointers, and the
/// scalar `metadata_public` values profiles may be selected by.
pub(crate) fn identity_of(
    kratos: &KratosIdentity,
    settings: &KratosSettings,
) -> Result<Identity, String> {
    let mut identity = Identity::new(IdentityId::parse(&kratos.id)?);
    identity.schema_id = kratos.schema_id.clone().filter(|s| !s.is_empty());
    identity.email = kratos.trait_at(&settings.email_pointer);
    identity.phone = kratos.trait_at(&settings.phone_pointer);
    for (key, value) in kratos.metadata_public_object() {
        let text = match value {
            Value::String(text) => text,
            Value::Bool(_) | Value::Number(_) => value.to_string(),
            _ => continue,
        };
        identity.metadata.insert(key, text);
    }
    Ok(identity)
}
