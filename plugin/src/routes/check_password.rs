//! `POST /v1/passwords/check`: may this identity change its password to this one?

use super::{busy_response, requested_locale, unexpected_response};
use crate::identity::{Identity, IdentityId};
use crate::password::Password;
use crate::passwords::{CheckOptions, PasswordsError};
use crate::policy::{ChangeContext, Decision};
use crate::Passwords;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use reclaim_common::json::{self, FieldError};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckBody {
    /// The identity provider's user id: 1..=255 bytes, no control characters.
    #[schema(
        min_length = 1,
        max_length = 255,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]+$"
    )]
    pub identity_id: String,
    /// The candidate, 1..=1024 bytes of UTF-8. Never stored in clear nor logged.
    #[schema(min_length = 1, max_length = 1024)]
    pub password: String,
    /// Use this profile instead of selecting one.
    pub profile: Option<String>,
    /// `voluntary` (default), `recovery` or `forced`: only a voluntary change is held to the minimum age.
    pub context: Option<ChangeContext>,
    /// Identity schema, for profile selection.
    pub schema_id: Option<String>,
    /// Identity metadata (flat strings), for profile selection.
    pub metadata: Option<BTreeMap<String, String>>,
}

#[derive(Debug, thiserror::Error)]
pub enum CheckPasswordError {
    #[error(transparent)]
    Invalid(#[from] FieldError),
    #[error("busy")]
    Busy(Duration),
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl From<PasswordsError> for CheckPasswordError {
    fn from(error: PasswordsError) -> Self {
        match error {
            PasswordsError::UnknownProfile(name) => Self::Invalid(FieldError::new(
                "profile",
                format!("no profile named `{name}`"),
            )),
            other => match super::split(other) {
                Ok(retry_after) => Self::Busy(retry_after),
                Err(e) => Self::Unexpected(e),
            },
        }
    }
}

impl ResponseError for CheckPasswordError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::Invalid(_) => StatusCode::BAD_REQUEST,
            Self::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Unexpected(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            Self::Invalid(e) => e.error_response(),
            Self::Busy(retry_after) => busy_response(*retry_after),
            Self::Unexpected(e) => unexpected_response(e),
        }
    }
}

/// Parses the identity part shared by check and record.
pub(super) fn parse_identity(
    identity_id: &str,
    schema_id: Option<String>,
    metadata: Option<BTreeMap<String, String>>,
) -> Result<Identity, FieldError> {
    let id = IdentityId::parse(identity_id).map_err(|m| FieldError::new("identity_id", m))?;
    let mut identity = Identity::new(id);
    identity.schema_id = schema_id;
    identity.metadata = metadata.unwrap_or_default();
    Ok(identity)
}

#[utoipa::path(
    post,
    path = "/v1/passwords/check",
    request_body = CheckBody,
    params(("Accept-Language" = Option<String>, Header, description = "Language of messages (en, es)")),
    responses(
        (status = 200, description = "The decision; `allowed` false lists the violations", body = Decision),
        (status = 400, description = "A field is missing or invalid; `error.field` names it"),
        (status = 401, description = "Missing or wrong bearer token"),
        (status = 413, description = "Body larger than http.max_body_bytes"),
        (status = 503, description = "Password hashing saturated; see Retry-After"),
    ),
    security(("bearer" = []))
)]
pub async fn check_password(
    req: HttpRequest,
    body: web::Bytes,
    passwords: web::Data<Passwords>,
) -> Result<HttpResponse, CheckPasswordError> {
    let body: CheckBody = json::parse(&body)?;
    let identity = parse_identity(&body.identity_id, body.schema_id, body.metadata)?;
    let password = Password::parse(body.password).map_err(|m| FieldError::new("password", m))?;
    let options = CheckOptions {
        context: body.context.unwrap_or_default(),
        profile: body.profile,
        locale: Some(requested_locale(&req, &passwords)),
    };
    let decision = passwords.check(&identity, &password, &options).await?;
    Ok(HttpResponse::Ok().json(decision))
}
