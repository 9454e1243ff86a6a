//! `/admin/identities/{id}/...`: force a change, mark compromised, erase (right to erasure).

use super::{identity_id_from_path, unexpected_response};
use crate::policy::MustChangeReason;
use crate::{PasswordState, Passwords};
use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse, ResponseError};
use reclaim_common::json::{self, FieldError};
use serde::Deserialize;

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ForceChangeBody {
    /// `admin` (default), `compromised` or `recovery`.
    pub reason: Option<MustChangeReason>,
}

/// Errors of the admin actions (they share inputs and outcomes).
#[derive(Debug, thiserror::Error)]
pub enum AdminActionError {
    #[error(transparent)]
    Invalid(#[from] FieldError),
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl From<crate::PasswordsError> for AdminActionError {
    fn from(error: crate::PasswordsError) -> Self {
        Self::Unexpected(anyhow::Error::new(error))
    }
}

impl ResponseError for AdminActionError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::Invalid(_) => StatusCode::BAD_REQUEST,
            Self::Unexpected(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            Self::Invalid(e) => e.error_response(),
            Self::Unexpected(e) => unexpected_response(e),
        }
    }
}

#[utoipa::path(
    post,
    path = "/admin/identities/{id}/force-change",
    params(("id" = String, Path, min_length = 1, max_length = 255, pattern = r"^[^\u0000-\u001F\u007F-\u009F]+$", description = "The identity id: 1..=255 bytes, no control characters")),
    request_body(content = Option<ForceChangeBody>, description = "Optional; the reason defaults to `admin`"),
    responses(
        (status = 200, description = "The next login must change the password", body = PasswordState),
        (status = 400, description = "Invalid id or body"),
        (status = 401, description = "Missing or wrong bearer token"),
    ),
    security(("bearer" = []))
)]
pub async fn force_change(
    path: web::Path<String>,
    body: web::Bytes,
    passwords: web::Data<Passwords>,
) -> Result<HttpResponse, AdminActionError> {
    let id = identity_id_from_path(&path)?;
    // No body, or `null`, takes the defaults.
    let body: ForceChangeBody = if body.iter().all(u8::is_ascii_whitespace) {
        ForceChangeBody::default()
    } else {
        json::parse::<Option<ForceChangeBody>>(&body)?.unwrap_or_default()
    };
    let state = passwords
        .force_change(&id, body.reason.unwrap_or(MustChangeReason::Admin))
        .await?;
    Ok(HttpResponse::Ok().json(state))
}

#[utoipa::path(
    post,
    path = "/admin/identities/{id}/compromised",
    params(("id" = String, Path, min_length = 1, max_length = 255, pattern = r"^[^\u0000-\u001F\u007F-\u009F]+$", description = "The identity id: 1..=255 bytes, no control characters")),
    responses(
        (status = 200, description = "Marked compromised: a change is required unless the profile's expiry is `off`", body = PasswordState),
        (status = 400, description = "Invalid id"),
        (status = 401, description = "Missing or wrong bearer token"),
    ),
    security(("bearer" = []))
)]
pub async fn mark_compromised(
    path: web::Path<String>,
    passwords: web::Data<Passwords>,
) -> Result<HttpResponse, AdminActionError> {
    let id = identity_id_from_path(&path)?;
    let state = passwords
        .force_change(&id, MustChangeReason::Compromised)
        .await?;
    Ok(HttpResponse::Ok().json(state))
}

#[utoipa::path(
    delete,
    path = "/admin/identities/{id}",
    params(("id" = String, Path, min_length = 1, max_length = 255, pattern = r"^[^\u0000-\u001F\u007F-\u009F]+$", description = "The identity id: 1..=255 bytes, no control characters")),
    responses(
        (status = 204, description = "History, state and remembered answers erased (also when there was nothing)"),
        (status = 400, description = "Invalid id"),
        (status = 401, description = "Missing or wrong bearer token"),
    ),
    security(("bearer" = []))
)]
pub async fn erase_identity(
    path: web::Path<String>,
    passwords: web::Data<Passwords>,
) -> Result<HttpResponse, AdminActionError> {
    let id = identity_id_from_path(&path)?;
    passwords.erase(&id).await?;
    Ok(HttpResponse::NoContent().finish())
}
