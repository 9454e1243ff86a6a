//! `POST /v1/identities/{id}/password/changed`: the identity provider saved a new password whose plaintext
//! Reclaim never saw (the gateway relays Supabase's `password_changed_notification` here). Requires an
//! `Idempotency-Key`: applied once per key, a retry gets the first answer.

use super::{identity_id_from_path, unexpected_response};
use crate::identity::Identity;
use crate::passwords::{PasswordsError, Reported};
use crate::policy::check_change_time;
use crate::{PasswordState, Passwords, Receipt};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use chrono::{DateTime, Utc};
use reclaim_common::idempotency::{self, IdempotencyKey};
use reclaim_common::json::{self, error_response, FieldError};
use serde::Deserialize;

const IDEMPOTENCY_KEY: &str = "Idempotency-Key";

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReportChangeBody {
    /// When the identity provider saved the password (RFC 3339), not before 1970 nor more than 5 minutes
    /// ahead of the server's clock; default now. A time older than the stored change changes nothing.
    pub changed_at: Option<DateTime<Utc>>,
    /// Contact addresses for notices.
    pub email: Option<String>,
    /// E.164, e.g. `+14155550100`: `+`, then 2 to 15 digits, the first not 0.
    #[schema(pattern = r"^\+[1-9][0-9]{1,14}$")]
    pub phone: Option<String>,
    pub schema_id: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReportChangeError {
    #[error(transparent)]
    Invalid(#[from] FieldError),
    #[error("the Idempotency-Key was already used with a different request")]
    KeyReused,
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl From<PasswordsError> for ReportChangeError {
    fn from(error: PasswordsError) -> Self {
        Self::Unexpected(anyhow::Error::new(error))
    }
}

impl ResponseError for ReportChangeError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::Invalid(_) => StatusCode::BAD_REQUEST,
            Self::KeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Unexpected(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            Self::Invalid(e) => e.error_response(),
            Self::KeyReused => error_response(
                self.status_code(),
                "idempotency_key_reused",
                self.to_string(),
                Some(IDEMPOTENCY_KEY),
            ),
            Self::Unexpected(e) => unexpected_response(e),
        }
    }
}

/// E.164: `+`, then 2 to 15 digits, the first not 0.
fn parse_phone(value: String) -> Result<String, FieldError> {
    let digits = value.strip_prefix('+').unwrap_or("");
    let valid = (2..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0');
    if valid {
        Ok(value)
    } else {
        Err(FieldError::new(
            "phone",
            "must be a phone number in E.164 form like +14155552671",
        ))
    }
}

#[utoipa::path(
    post,
    path = "/v1/identities/{id}/password/changed",
    request_body = ReportChangeBody,
    params(
        ("id" = String, Path, min_length = 1, max_length = 255, pattern = r"^[^\u0000-\u001F\u007F-\u009F]+$", description = "The identity id: 1..=255 bytes, no control characters"),
        ("Idempotency-Key" = String, Header, min_length = 1, max_length = 255, pattern = r"^[\x21-\x7E]+$", description = "Required, 1 to 255 visible ASCII characters; retries with the same key and body get the first answer and change nothing"),
    ),
    responses(
        (status = 200, description = "Applied (or older than the stored change: nothing changed); the state", body = PasswordState),
        (status = 400, description = "A field or the Idempotency-Key header is missing or invalid; `error.field` names it"),
        (status = 401, description = "Missing or wrong bearer token"),
        (status = 422, description = "The Idempotency-Key was used with a different body"),
    ),
    security(("bearer" = []))
)]
pub async fn report_change(
    req: HttpRequest,
    path: web::Path<String>,
    raw: web::Bytes,
    passwords: web::Data<Passwords>,
) -> Result<HttpResponse, ReportChangeError> {
    let id = identity_id_from_path(&path)?;
    let key = IdempotencyKey::from_headers(req.headers(), IDEMPOTENCY_KEY)?
        .ok_or_else(|| FieldError::new(IDEMPOTENCY_KEY, "is required"))?;
    let body: ReportChangeBody = json::parse(&raw)?;
    let changed_at = body
        .changed_at
        .map(|at| check_change_time(at, passwords.clock().now()))
        .transpose()
        .map_err(|m| FieldError::new("changed_at", m))?;
    let mut identity = Identity::new(id);
    identity.schema_id = body.schema_id;
    identity.email = body.email.filter(|e| !e.trim().is_empty());
    identity.phone = body.phone.map(parse_phone).transpose()?;
    let receipt =
        Receipt::new(Passwords::report_scope(&identity.id), key, &raw).about(identity.id.as_str());
    match passwords
        .report_change(&identity, changed_at, receipt)
        .await?
    {
        Reported::New { state, .. } => Ok(HttpResponse::Ok().json(state)),
        Reported::Replay(first) if !first.same_request => Err(ReportChangeError::KeyReused),
        Reported::Replay(first) => Ok(idempotency::replay(&first)),
    }
}
