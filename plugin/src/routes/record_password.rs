//! `POST /v1/passwords/record`: the identity now has this password. Idempotent with `Idempotency-Key`.

use super::check_password::parse_identity;
use super::{busy_response, unexpected_response};
use crate::password::Password;
use crate::passwords::PasswordsError;
use crate::policy::{check_change_time, ChangeContext};
use crate::{PasswordState, Passwords, Receipt, Recorded};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use anyhow::Context;
use chrono::{DateTime, Utc};
use reclaim_common::idempotency::{self, IdempotencyKey};
use reclaim_common::json::{self, error_response, FieldError};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;

const IDEMPOTENCY_KEY: &str = "Idempotency-Key";

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecordBody {
    /// The identity provider's user id: 1..=255 bytes, no control characters.
    #[schema(
        min_length = 1,
        max_length = 255,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]+$"
    )]
    pub identity_id: String,
    /// The new password, 1..=1024 bytes of UTF-8. Stored only as a keyed digest.
    #[schema(min_length = 1, max_length = 1024)]
    pub password: String,
    /// When the change happened (RFC 3339), not before 1970 nor more than 5 minutes ahead of the server's
    /// clock; default now.
    pub changed_at: Option<DateTime<Utc>>,
    /// `voluntary` (default), `recovery` or `forced`.
    pub reason: Option<ChangeContext>,
    pub schema_id: Option<String>,
    pub metadata: Option<BTreeMap<String, String>>,
    /// Contact addresses for notices.
    pub email: Option<String>,
    pub phone: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum RecordPasswordError {
    #[error(transparent)]
    Invalid(#[from] FieldError),
    #[error("the Idempotency-Key was already used with a different request")]
    KeyReused,
    #[error("busy")]
    Busy(Duration),
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl From<PasswordsError> for RecordPasswordError {
    fn from(error: PasswordsError) -> Self {
        match super::split(error) {
            Ok(retry_after) => Self::Busy(retry_after),
            Err(e) => Self::Unexpected(e),
        }
    }
}

impl ResponseError for RecordPasswordError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::Invalid(_) => StatusCode::BAD_REQUEST,
            Self::KeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
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
            Self::Busy(retry_after) => busy_response(*retry_after),
            Self::Unexpected(e) => unexpected_response(e),
        }
    }
}

#[utoipa::path(
    post,
    path = "/v1/passwords/record",
    request_body = RecordBody,
    params(("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = r"^[\x21-\x7E]+$", description = "1 to 255 visible ASCII characters. Retries with the same key and body get the first answer and change nothing")),
    responses(
        (status = 200, description = "Recorded; the new state", body = PasswordState),
        (status = 400, description = "A field is missing or invalid; `error.field` names it"),
        (status = 401, description = "Missing or wrong bearer token"),
        (status = 422, description = "The Idempotency-Key was used with a different body"),
        (status = 503, description = "Password hashing saturated; see Retry-After"),
    ),
    security(("bearer" = []))
)]
pub async fn record_password(
    req: HttpRequest,
    raw: web::Bytes,
    passwords: web::Data<Passwords>,
) -> Result<HttpResponse, RecordPasswordError> {
    let key = IdempotencyKey::from_headers(req.headers(), IDEMPOTENCY_KEY)?;
    let body: RecordBody = json::parse(&raw)?;
    let mut identity = parse_identity(&body.identity_id, body.schema_id, body.metadata)?;
    identity.email = body.email;
    identity.phone = body.phone;
    let password = Password::parse(body.password).map_err(|m| FieldError::new("password", m))?;
    let reason = body.reason.unwrap_or_default();
    let changed_at = body
        .changed_at
        .map(|at| check_change_time(at, passwords.clock().now()))
        .transpose()
        .map_err(|m| FieldError::new("changed_at", m))?;
    let Some(key) = key else {
        let state = passwords
            .record(&identity, &password, changed_at, reason)
            .await?;
        return Ok(HttpResponse::Ok().json(state));
    };
    let receipt =
        Receipt::new(Passwords::record_scope(&identity.id), key, &raw).about(identity.id.as_str());
    // A retry is answered from the remembered answer without spending a KDF run.
    let seen = {
        let receipt = receipt.clone();
        passwords
            .db()
            .run(move |conn| idempotency::lookup(conn, &receipt))
            .await
            .context("looking up the idempotency key")?
    };
    let recorded = match seen {
        Some(first) => Recorded::Replay(first),
        None => {
            passwords
                .record_once(&identity, &password, changed_at, reason, receipt)
                .await?
        }
    };
    match recorded {
        Recorded::New(state) => Ok(HttpResponse::Ok().json(state)),
        Recorded::Replay(first) if !first.same_request => Err(RecordPasswordError::KeyReused),
        Recorded::Replay(first) => Ok(idempotency::replay(&first)),
    }
}
