//! `GET /v1/identities/{id}/password`: the state of an identity's password.

use super::{identity_id_from_path, unexpected_response};
use crate::{PasswordState, Passwords};
use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse, ResponseError};
use reclaim_common::json::{error_response, FieldError};

#[derive(Debug, thiserror::Error)]
pub enum ShowPasswordStateError {
    #[error(transparent)]
    Invalid(#[from] FieldError),
    #[error("the plugin has no record of this identity")]
    UnknownIdentity,
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl From<crate::PasswordsError> for ShowPasswordStateError {
    fn from(error: crate::PasswordsError) -> Self {
        Self::Unexpected(anyhow::Error::new(error))
    }
}

impl ResponseError for ShowPasswordStateError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::Invalid(_) => StatusCode::BAD_REQUEST,
            Self::UnknownIdentity => StatusCode::NOT_FOUND,
            Self::Unexpected(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            Self::Invalid(e) => e.error_response(),
            Self::UnknownIdentity => error_response(
                self.status_code(),
                "unknown_identity",
                self.to_string(),
                Some("id"),
            ),
            Self::Unexpected(e) => unexpected_response(e),
        }
    }
}

#[utoipa::path(
    get,
    path = "/v1/identities/{id}/password",
    params(("id" = String, Path, min_length = 1, max_length = 255, pattern = r"^[^\u0000-\u001F\u007F-\u009F]+$", description = "The identity id: 1..=255 bytes, no control characters")),
    responses(
        (status = 200, description = "Changed, expires, days left, must change and why", body = PasswordState),
        (status = 400, description = "The id is not a valid identity id; `error.field` is `id`"),
        (status = 401, description = "Missing or wrong bearer token"),
        (status = 404, description = "The plugin has no record of this identity"),
    ),
    security(("bearer" = []))
)]
pub async fn show_password_state(
    path: web::Path<String>,
    passwords: web::Data<Passwords>,
) -> Result<HttpResponse, ShowPasswordStateError> {
    let id = identity_id_from_path(&path)?;
    let state: PasswordState = passwords
        .state(&id)
        .await?
        .ok_or(ShowPasswordStateError::UnknownIdentity)?;
    Ok(HttpResponse::Ok().json(state))
}
