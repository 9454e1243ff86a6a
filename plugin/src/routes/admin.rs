//! `/admin/identities/{id}/...`: show an identity to an operator, force a change, mark compromised, erase
//! (right to erasure). Each call is logged with the operator's name by `require_admin`.

use super::{identity_id_from_path, unexpected_response};
use crate::policy::MustChangeReason;
use crate::{PasswordState, Passwords};
use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse, ResponseError};
use reclaim_common::auth::Operator;
use reclaim_common::json::{self, FieldError};
use reclaim_common::secret::mask_address;
use serde::{Deserialize, Serialize};

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

/// What an operator sees of an identity: its password state, how many notices wait to be handed to the
/// gateway, and its contacts masked. Never digests, salts or full addresses.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct IdentityView {
    /// Profile, changed and expiry times, must change and why, grace logins used, history size.
    pub state: PasswordState,
    /// Notices (`password_changed`, `password_expiring`, `password_change_required`) not yet accepted by
    /// the gateway.
    pub pending_notices: usize,
    /// The email address notices go to, masked (`j***@example.com`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// The phone number notices go to, masked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
}

/// `GET /admin/identities/{id}` fails exactly as `GET /v1/identities/{id}/password` does (a bad id, an
/// identity the plugin never saw, an internal error): one enum for both reads of an identity's state.
pub type ShowIdentityError = super::show_password_state::ShowPasswordStateError;

#[utoipa::path(
    get,
    path = "/admin/identities/{id}",
    params(("id" = String, Path, min_length = 1, max_length = 255, pattern = r"^[^\u0000-\u001F\u007F-\u009F]+$", description = "The identity id: 1..=255 bytes, no control characters")),
    responses(
        (status = 200, description = "State, history size, pending notices, masked contacts", body = IdentityView),
        (status = 400, description = "Invalid id"),
        (status = 401, description = "Missing or wrong admin bearer token"),
        (status = 404, description = "The plugin has no record of this identity"),
    ),
    security(("bearer" = []))
)]
pub async fn show_identity(
    path: web::Path<String>,
    operator: Operator,
    passwords: web::Data<Passwords>,
) -> Result<HttpResponse, ShowIdentityError> {
    let id = identity_id_from_path(&path)?;
    let state = passwords
        .state(&id)
        .await?
        .ok_or(ShowIdentityError::UnknownIdentity)?;
    let lookup = id.clone();
    let notices = passwords
        .db()
        .run(move |conn| crate::notices::of_identity(conn, lookup.as_str()))
        .await
        .map_err(anyhow::Error::new)?;
    let pending_notices = notices.iter().filter(|n| n.status == "pending").count();
    tracing::info!(
        operator = %operator.name(),
        identity.id = %id.as_str(),
        "identity shown to an operator"
    );
    Ok(HttpResponse::Ok().json(IdentityView {
        email: state.email.as_deref().map(mask_address),
        phone: state.phone.as_deref().map(mask_address),
        state,
        pending_notices,
    }))
}
