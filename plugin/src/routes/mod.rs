//! The generic HTTP API (DESIGN §3.3) for identity providers that can send the plaintext: handlers named as
//! verbs, one file each (`report_change.rs`: a change an IdP reports without the plaintext) (`admin.rs` holds the three admin actions). `/v1` takes a bearer token from
//! `plugin.api.tokens`, `/admin` one from `plugin.admin.tokens`.
//!
//! What is not here: policy and storage (the [`crate::Passwords`] facade does both); IdP-specific webhooks.

mod admin;
mod check_password;
mod record_password;
mod report_change;
mod show_password_state;

use crate::identity::IdentityId;
use crate::passwords::PasswordsError;
use crate::policy::Locale;
use crate::Passwords;
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::middleware::from_fn;
use actix_web::{web, HttpRequest, HttpResponse};
use reclaim_common::auth::{require_admin, require_bearer, AdminOperators, BearerTokens};
use reclaim_common::json::{error_response, FieldError};
use reclaim_common::Secret;
use serde_json::Value;
use std::time::Duration;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

pub use admin::{erase_identity, force_change, mark_compromised, show_identity};
pub use check_password::check_password;
pub use record_password::record_password;
pub use report_change::report_change;
pub use show_password_state::show_password_state;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Reclaim plugin",
        description = "Password history and expiry policy for identity providers"
    ),
    paths(
        check_password::check_password,
        record_password::record_password,
        report_change::report_change,
        show_password_state::show_password_state,
        admin::force_change,
        admin::mark_compromised,
        admin::erase_identity,
        admin::show_identity,
    ),
    components(schemas(
        check_password::CheckBody,
        record_password::RecordBody,
        report_change::ReportChangeBody,
        admin::ForceChangeBody,
        crate::policy::Decision,
        crate::policy::Violation,
        crate::policy::ViolationCode,
        crate::policy::ChangeContext,
        crate::policy::MustChangeReason,
        crate::PasswordState,
    )),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
pub struct ApiDoc;

/// The plugin's OpenAPI document: the API above and the identity providers' hooks, with `profile` naming
/// the profiles this deployment has (`plugin.policy.profiles`).
pub fn document(settings: &reclaim_common::Settings) -> Value {
    let mut doc = ApiDoc::openapi();
    doc.merge(crate::kratos::HooksDoc::openapi());
    doc.merge(crate::supabase::HookDoc::openapi());
    doc.merge(crate::zitadel::HooksDoc::openapi());
    let mut value = reclaim_common::openapi::to_value(&doc);
    // `null` picks the profile by the selection rules, as leaving it out does.
    let mut profiles: Vec<Value> = settings
        .plugin
        .policy
        .profiles
        .keys()
        .map(|name| Value::String(name.clone()))
        .collect();
    profiles.push(Value::Null);
    if let Some(Value::Object(profile)) =
        value.pointer_mut("/components/schemas/CheckBody/properties/profile")
    {
        profile.insert("enum".into(), Value::Array(profiles));
    }
    let recorded = serde_json::json!({"id": "$request.body#/identity_id"});
    for (name, operation) in [
        ("ShowPasswordState", "show_password_state"),
        ("ForceChange", "force_change"),
        ("MarkCompromised", "mark_compromised"),
        ("EraseIdentity", "erase_identity"),
    ] {
        reclaim_common::openapi::add_link(
            &mut value,
            ("post", "/v1/passwords/record", "200"),
            name,
            operation,
            recorded.clone(),
        );
    }
    value
}

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// Mounts the API: `/v1` accepts `api_tokens` only, `/admin` accepts the tokens of `admin_operators` only
/// (each with its operator's name, [`reclaim_common::settings::AdminSettings::operators`]).
pub fn configure(
    cfg: &mut web::ServiceConfig,
    passwords: Passwords,
    api_tokens: Vec<Secret>,
    admin_operators: Vec<(String, Secret)>,
) {
    cfg.app_data(web::Data::new(passwords))
        .service(
            web::scope("/v1")
                .app_data(web::Data::new(BearerTokens(api_tokens)))
                .wrap(from_fn(require_bearer))
                .route("/passwords/check", web::post().to(check_password))
                .route("/passwords/record", web::post().to(record_password))
                .route(
                    "/identities/{id}/password",
                    web::get().to(show_password_state),
                )
                .route(
                    "/identities/{id}/password/changed",
                    web::post().to(report_change),
                ),
        )
        .service(
            web::scope("/admin")
                .app_data(web::Data::new(AdminOperators(admin_operators)))
                .wrap(from_fn(require_admin))
                .route(
                    "/identities/{id}/force-change",
                    web::post().to(force_change),
                )
                .route(
                    "/identities/{id}/compromised",
                    web::post().to(mark_compromised),
                )
                .route("/identities/{id}", web::delete().to(erase_identity))
                .route("/identities/{id}", web::get().to(show_identity)),
        );
}

/// The language the caller asked for in `Accept-Language`, if we have it.
fn requested_locale(req: &HttpRequest, passwords: &Passwords) -> Locale {
    let header = req
        .headers()
        .get(header::ACCEPT_LANGUAGE)
        .and_then(|v| v.to_str().ok());
    Locale::negotiate(header, passwords.policy().default_locale())
}

/// Parses the `{id}` path segment.
fn identity_id_from_path(raw: &str) -> Result<IdentityId, FieldError> {
    IdentityId::parse(raw).map_err(|m| FieldError::new("id", m))
}

/// 503 with `Retry-After` when the KDF pool is saturated.
pub(crate) fn busy_response(retry_after: Duration) -> HttpResponse {
    let mut response = error_response(
        StatusCode::SERVICE_UNAVAILABLE,
        "busy",
        "too many password checks at once; retry after the indicated delay",
        None,
    );
    let seconds = retry_after.as_secs().max(1).to_string();
    if let Ok(value) = HeaderValue::from_str(&seconds) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

/// 503 when the database is unavailable ([`reclaim_common::http::database_unavailable`]), else 500 without
/// details; the cause goes to the log with the request id.
fn unexpected_response(error: &anyhow::Error) -> HttpResponse {
    if reclaim_common::db::is_unavailable(error) {
        return reclaim_common::http::database_unavailable(error);
    }
    tracing::error!(error = ?error, "request failed");
    error_response(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "internal error; see the server log for this request id",
        None,
    )
}

/// How facade errors reach an endpoint's own error enum.
fn split(error: PasswordsError) -> Result<Duration, anyhow::Error> {
    match error {
        PasswordsError::Saturated { retry_after } => Ok(retry_after),
        other => Err(anyhow::Error::new(other)),
    }
}
