//! `/v1/verifications`: start, resend, check, cancel and show one-time codes and links. The rules live in
//! `crate::verifications`; these handlers parse, call it, and pick the status code.

use super::messages::internal;
use crate::address::Destination;
use crate::channel::Channel;
use crate::verifications::{
    CheckView, NewVerification, Purpose, Status, VerificationError, VerificationView, Verifications,
};
use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse, ResponseError};
use reclaim_common::json::{error_response, FieldError};
use serde::Deserialize;
use utoipa::ToSchema;

/// A verification to start.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartVerificationRequest {
    pub channel: Channel,
    /// E.164 number for sms and voice, an email address for email.
    pub to: String,
    pub purpose: Purpose,
    /// BCP 47; falls back to the language, then to `gateway.messages.default_locale`.
    pub locale: Option<String>,
    /// Email only: send a link (this URL plus `token=<token>`) instead of a code; the token is what
    /// `/check` takes.
    pub link_url: Option<String>,
    /// The account this verification is for, if the caller knows it.
    pub identity_id: Option<String>,
    /// The end user's IP address, as the caller saw it.
    pub client_ip: Option<String>,
    /// `false` when the caller knows no account has this destination: the answer is the same as for a known
    /// one and nothing is sent. Default `true`.
    pub known: Option<bool>,
}

/// A resend, optionally on another channel (sms ↔ voice).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResendVerificationRequest {
    pub channel: Option<Channel>,
    /// The end user's IP address, as the caller saw it (for the limit per IP).
    pub client_ip: Option<String>,
}

/// A code (or a link's token) to check.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckVerificationRequest {
    pub code: String,
}

impl ResponseError for VerificationError {
    fn status_code(&self) -> StatusCode {
        match self {
            VerificationError::Invalid(_) | VerificationError::BadSecret(_) => {
                StatusCode::BAD_REQUEST
            }
            VerificationError::NotFound => StatusCode::NOT_FOUND,
            VerificationError::Finished(_) | VerificationError::Busy => StatusCode::CONFLICT,
            VerificationError::MaxSends(_) | VerificationError::TooSoon { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            VerificationError::Limited(refusal) => refusal.status(),
            VerificationError::Unexpected(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        match self {
            VerificationError::Invalid(e) => e.error_response(),
            VerificationError::BadSecret(e) => {
                error_response(status, "invalid_code", e.to_string(), Some("code"))
            }
            VerificationError::NotFound => {
                error_response(status, "not_found", self.to_string(), Some("id"))
            }
            VerificationError::Finished(state) => {
                error_response(status, finished_code(*state), self.to_string(), Some("id"))
            }
            VerificationError::Busy => error_response(status, "busy", self.to_string(), Some("id")),
            VerificationError::MaxSends(_) => {
                error_response(status, "max_sends_reached", self.to_string(), Some("id"))
            }
            VerificationError::TooSoon { retry_after, .. } => {
                let mut response =
                    error_response(status, "resend_too_soon", self.to_string(), Some("id"));
                let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
                if let Ok(value) =
                    actix_web::http::header::HeaderValue::from_str(&seconds.max(1).to_string())
                {
                    response
                        .headers_mut()
                        .insert(actix_web::http::header::RETRY_AFTER, value);
                }
                response
            }
            VerificationError::Limited(refusal) => refusal.error_response(),
            VerificationError::Unexpected(e) => internal(e),
        }
    }
}

/// The stable error code for an action on a verification that is no longer pending.
fn finished_code(status: Status) -> &'static str {
    match status {
        Status::Pending => "verification_pending",
        Status::Approved => "verification_approved",
        Status::MaxChecksReached => "max_checks_reached",
        Status::Expired => "verification_expired",
        Status::Canceled => "verification_canceled",
    }
}

fn checked_id(id: String) -> Result<String, VerificationError> {
    if uuid::Uuid::parse_str(&id).is_ok() {
        Ok(id)
    } else {
        Err(VerificationError::NotFound)
    }
}

fn parse_client_ip(text: Option<String>) -> Result<Option<std::net::IpAddr>, FieldError> {
    text.map(|t| {
        t.trim()
            .parse::<std::net::IpAddr>()
            .map_err(|_| FieldError::new("client_ip", "must be an IPv4 or IPv6 address"))
    })
    .transpose()
}

fn validate(
    request: StartVerificationRequest,
    default_locale: &str,
) -> Result<NewVerification, FieldError> {
    let destination =
        Destination::parse(request.channel, &request.to).map_err(|m| FieldError::new("to", m))?;
    let locale = request.locale.unwrap_or_else(|| default_locale.to_string());
    if !crate::templates::is_well_formed_locale(&locale) {
        return Err(FieldError::new(
            "locale",
            "must be a BCP 47 tag such as en or es-MX",
        ));
    }
    let link_url = match request.link_url {
        None => None,
        Some(text) => match url::Url::parse(&text) {
            Ok(url) if matches!(url.scheme(), "https" | "http") && url.host().is_some() => {
                Some(url)
            }
            _ => {
                return Err(FieldError::new(
                    "link_url",
                    "must be an absolute http(s) URL such as https://app.example.com/recover",
                ))
            }
        },
    };
    if let Some(id) = &request.identity_id {
        if id.is_empty() || id.len() > 255 {
            return Err(FieldError::new(
                "identity_id",
                "must be 1 to 255 characters",
            ));
        }
    }
    let client_ip = match request.client_ip {
        None => None,
        Some(text) => Some(
            text.trim()
                .parse::<std::net::IpAddr>()
                .map_err(|_| FieldError::new("client_ip", "must be an IPv4 or IPv6 address"))?,
        ),
    };
    Ok(NewVerification {
        channel: request.channel,
        destination,
        purpose: request.purpose,
        locale,
        link_url,
        identity_id: request.identity_id,
        client_ip,
        known: request.known.unwrap_or(true),
    })
}

/// Start a verification: generate a code (or, for email with `link_url`, a link) and queue its message.
#[utoipa::path(
    post,
    path = "/v1/verifications",
    request_body = StartVerificationRequest,
    responses(
        (status = 201, description = "Started; the message is queued", body = VerificationView),
        (status = 400, description = "Invalid field, named in the error"),
        (status = 401, description = "Missing or wrong bearer token"),
        (status = 422, description = "Refused for good by the abuse limits (e.g. `country_not_allowed`, `number_type_refused`)"),
        (status = 429, description = "Refused by the abuse limits for now (reason in `error.code`); see Retry-After"),
    ),
    security(("bearer" = []))
)]
pub async fn start_verification(
    body: web::Bytes,
    verifications: web::Data<Verifications>,
    state: web::Data<super::ApiState>,
) -> Result<HttpResponse, VerificationError> {
    let request: StartVerificationRequest = reclaim_common::json::parse(&body)?;
    let new = validate(request, &state.settings.messages.default_locale)?;
    let view = verifications.start(new).await?;
    Ok(HttpResponse::Created().json(view))
}

/// Send the verification again: the same code while it is valid (on `channel` if given: sms ↔ voice), or
/// a new link that replaces the older one. Still-queued earlier messages are canceled.
#[utoipa::path(
    post,
    path = "/v1/verifications/{id}/resend",
    request_body(content = Option<ResendVerificationRequest>),
    params(("id" = String, Path, description = "Verification id")),
    responses(
        (status = 200, description = "Queued again", body = VerificationView),
        (status = 400, description = "Invalid field, named in the error"),
        (status = 401, description = "Missing or wrong bearer token"),
        (status = 404, description = "No such verification"),
        (status = 409, description = "No longer pending (code names the status)"),
        (status = 422, description = "Refused for good by the abuse limits (e.g. `country_not_allowed`)"),
        (status = 429, description = "Too soon (Retry-After), no sends left, or refused by the abuse limits for now"),
    ),
    security(("bearer" = []))
)]
pub async fn resend_verification(
    path: web::Path<String>,
    body: web::Bytes,
    verifications: web::Data<Verifications>,
) -> Result<HttpResponse, VerificationError> {
    let id = checked_id(path.into_inner())?;
    // No body, or `null`, resends on the same channel.
    let request: ResendVerificationRequest = if body.iter().all(u8::is_ascii_whitespace) {
        ResendVerificationRequest::default()
    } else {
        reclaim_common::json::parse::<Option<ResendVerificationRequest>>(&body)?.unwrap_or_default()
    };
    let client_ip = parse_client_ip(request.client_ip)?;
    let view = verifications.resend(id, request.channel, client_ip).await?;
    Ok(HttpResponse::Ok().json(view))
}

/// Check a code or a link's token. Single use; a wrong one counts against `checks_left`.
#[utoipa::path(
    post,
    path = "/v1/verifications/{id}/check",
    request_body = CheckVerificationRequest,
    params(("id" = String, Path, description = "Verification id")),
    responses(
        (status = 200, description = "approved, pending (wrong) or max_checks_reached", body = CheckView),
        (status = 400, description = "The code is not shaped like one this verification sent"),
        (status = 401, description = "Missing or wrong bearer token"),
        (status = 404, description = "No such verification"),
        (status = 409, description = "No longer pending: verification_approved, verification_expired, verification_canceled, max_checks_reached"),
    ),
    security(("bearer" = []))
)]
pub async fn check_verification(
    path: web::Path<String>,
    body: web::Bytes,
    verifications: web::Data<Verifications>,
) -> Result<HttpResponse, VerificationError> {
    let id = checked_id(path.into_inner())?;
    let request: CheckVerificationRequest = reclaim_common::json::parse(&body)?;
    let view = verifications.check(id, request.code).await?;
    Ok(HttpResponse::Ok().json(view))
}

/// Cancel a pending verification: its code stops working and queued messages are dropped.
#[utoipa::path(
    post,
    path = "/v1/verifications/{id}/cancel",
    params(("id" = String, Path, description = "Verification id")),
    responses(
        (status = 200, description = "Canceled", body = VerificationView),
        (status = 401, description = "Missing or wrong bearer token"),
        (status = 404, description = "No such verification"),
        (status = 409, description = "No longer pending (code names the status)"),
    ),
    security(("bearer" = []))
)]
pub async fn cancel_verification(
    path: web::Path<String>,
    verifications: web::Data<Verifications>,
) -> Result<HttpResponse, VerificationError> {
    let id = checked_id(path.into_inner())?;
    Ok(HttpResponse::Ok().json(verifications.cancel(id).await?))
}

/// A verification with each send and its message's delivery status.
#[utoipa::path(
    get,
    path = "/v1/verifications/{id}",
    params(("id" = String, Path, description = "Verification id")),
    responses(
        (status = 200, description = "The verification", body = VerificationView),
        (status = 401, description = "Missing or wrong bearer token"),
        (status = 404, description = "No such verification"),
    ),
    security(("bearer" = []))
)]
pub async fn show_verification(
    path: web::Path<String>,
    verifications: web::Data<Verifications>,
) -> Result<HttpResponse, VerificationError> {
    let id = checked_id(path.into_inner())?;
    Ok(HttpResponse::Ok().json(verifications.show(id).await?))
}
