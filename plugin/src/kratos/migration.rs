//! Kratos's password migration hook (`selfservice.methods.password.config.migrate_hook`): at the login of an
//! identity whose password credential is marked for migration, Kratos sends `{"identifier", "password"}` (our
//! kit's body template adds `identity_id`) and lets the user in on `200 {"status":"password_match"}`; any other
//! answer refuses the login. Hashes come from `reclaim import hashes`.

use super::call::authenticate;
use super::KratosHooks;
use crate::identity::IdentityId;
use crate::password::Password;
use crate::passwords::{LegacyIdentifier, LegacyMigration, PasswordsError};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use reclaim_common::auth::AuthError;
use reclaim_common::json::{error_response, FieldError};
use serde::Deserialize;
use std::time::Duration;

#[derive(Deserialize)]
struct MigrationBody {
    identifier: String,
    password: String,
    #[serde(default)]
    identity_id: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum MigratePasswordError {
    #[error("not authenticated: {0}")]
    Unauthorized(AuthError),
    #[error(transparent)]
    BadRequest(FieldError),
    #[error("the password does not match")]
    Mismatch,
    #[error("the password hashing pool is saturated")]
    Saturated(Duration),
    #[error(transparent)]
    Unexpected(anyhow::Error),
}

impl From<PasswordsError> for MigratePasswordError {
    fn from(error: PasswordsError) -> Self {
        match error {
            PasswordsError::Saturated { retry_after } => Self::Saturated(retry_after),
            other => Self::Unexpected(anyhow::Error::new(other)),
        }
    }
}

impl actix_web::ResponseError for MigratePasswordError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Mismatch => StatusCode::FORBIDDEN,
            Self::Saturated(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Unexpected(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            Self::Unauthorized(_) => error_response(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "missing or wrong Kratos credentials",
                None,
            ),
            Self::BadRequest(field) => field.error_response(),
            Self::Mismatch => error_response(
                StatusCode::FORBIDDEN,
                "password_mismatch",
                "the password does not match",
                None,
            ),
            Self::Saturated(retry_after) => crate::routes::busy_response(*retry_after),
            Self::Unexpected(error) => {
                tracing::error!(error = ?error, "password migration failed");
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

/// `POST /hooks/kratos/password-migration`.
#[utoipa::path(
    post,
    path = "/hooks/kratos/password-migration",
    tag = "kratos",
    request_body(content = Object, description = "Kratos's password migration hook body (`identifier`, `password`)"),
    responses(
        (status = 200, description = "The password matches the imported hash (`{\"status\": \"password_match\"}`); Kratos stores it", body = Object),
        (status = 400, description = "A field is missing or invalid; `error.field` names it"),
        (status = 401, description = "Missing or wrong Kratos credentials (`plugin.kratos.auth`)"),
        (status = 403, description = "The password does not match"),
        (status = 503, description = "Password hashing saturated; see Retry-After"),
    ),
    security(())
)]
pub async fn migrate_password(
    req: HttpRequest,
    bytes: web::Bytes,
    hooks: web::Data<KratosHooks>,
) -> Result<HttpResponse, MigratePasswordError> {
    authenticate(&req, &hooks.settings).map_err(|e| {
        tracing::warn!(reason = %e, "Kratos password migration refused: credentials");
        MigratePasswordError::Unauthorized(e)
    })?;
    let body: MigrationBody =
        reclaim_common::json::parse(&bytes).map_err(MigratePasswordError::BadRequest)?;
    let identifier = LegacyIdentifier::parse(&body.identifier)
        .map_err(|m| MigratePasswordError::BadRequest(FieldError::new("identifier", m)))?;
    let password = Password::parse(body.password)
        .map_err(|m| MigratePasswordError::BadRequest(FieldError::new("password", m)))?;
    let identity_id = body
        .identity_id
        .filter(|id| !id.is_empty())
        .map(|id| IdentityId::parse(&id))
        .transpose()
        .map_err(|m| MigratePasswordError::BadRequest(FieldError::new("identity_id", m)))?;
    match hooks
        .passwords
        .migrate_legacy(&identifier, identity_id.as_ref(), &password)
        .await?
    {
        LegacyMigration::Matched => {
            Ok(HttpResponse::Ok().json(serde_json::json!({"status": "password_match"})))
        }
        LegacyMigration::Refused => Err(MigratePasswordError::Mismatch),
    }
}
