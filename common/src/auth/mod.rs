//! Authentication of API callers and webhook senders. Secrets are compared in constant time and the raw
//! body is verified before it is parsed.
//!
//! `mod.rs` holds the header schemes (bearer, API key, Basic), [`require_bearer`], the middleware that
//! guards a scope with its own tokens, and [`HookCredentials`], what an IdP's hook calls must carry (Kratos
//! web hooks and courier: an API key header or Basic); signature schemes live one per file (`twilio`,
//! `zitadel`).

pub mod standard_webhooks;
pub mod twilio;
pub mod zitadel;

use crate::json::error_response;
use crate::secret::{constant_time_eq, Secret};
use crate::settings::KratosAuth;
use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderMap, HeaderValue, AUTHORIZATION, WWW_AUTHENTICATE};
use actix_web::http::StatusCode;
use actix_web::middleware::Next;
use actix_web::web;
use base64::Engine;

/// Why a caller was not let in. The message is for logs, never for the response body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no credentials presented")]
    Missing,
    #[error("credentials not accepted")]
    Wrong,
    #[error("signature timestamp outside the tolerance")]
    Stale,
}

/// `Authorization: Bearer <token>` checked against every configured token.
pub fn check_bearer(headers: &HeaderMap, tokens: &[Secret]) -> Result<(), AuthError> {
    let presented = bearer(headers).ok_or(AuthError::Missing)?;
    any_matches(tokens, presented.as_bytes())
}

/// The bearer tokens one scope accepts (`/v1`: the API tokens, `/admin`: the admin tokens). Set it as the
/// scope's app data and wrap the scope with [`require_bearer`]:
/// `web::scope("/admin").app_data(web::Data::new(BearerTokens(tokens))).wrap(from_fn(require_bearer))`.
#[derive(Clone, Debug, Default)]
pub struct BearerTokens(pub Vec<Secret>);

/// Refuses a request without one of its scope's [`BearerTokens`] (none configured = every request) with 401
/// in the common JSON shape. It runs before any extractor, so an unauthenticated body is never read.
pub async fn require_bearer(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let verdict = match req.app_data::<web::Data<BearerTokens>>() {
        Some(tokens) => check_bearer(req.headers(), &tokens.0),
        None => Err(AuthError::Wrong),
    };
    match verdict {
        Ok(()) => Ok(next.call(req).await?.map_into_left_body()),
        Err(reason) => Ok(refuse(req, reason).map_into_right_body()),
    }
}

/// The admin tokens one `/admin` scope accepts, each with its operator's name
/// ([`crate::settings::AdminSettings::operators`]). Set it as the scope's app data and wrap the scope with
/// [`require_admin`].
#[derive(Clone, Debug, Default)]
pub struct AdminOperators(pub Vec<(String, Secret)>);

/// The operator an admin call was let in as (the name of its token's entry; `admin` for the plain
/// `tokens`). [`require_admin`] puts it in the request; handlers take it as an argument.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operator(pub String);

impl Operator {
    pub fn name(&self) -> &str {
        &self.0
    }
}

impl actix_web::FromRequest for Operator {
    type Error = actix_web::Error;
    type Future = std::future::Ready<Result<Self, Self::Error>>;

    fn from_request(req: &actix_web::HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        use actix_web::HttpMessage;
        std::future::ready(
            req.extensions()
                .get::<Operator>()
                .cloned()
                .ok_or_else(|| actix_web::error::ErrorUnauthorized("no operator")),
        )
    }
}

/// The operator whose token `Authorization: Bearer` carries. Every token is compared, in constant time.
pub fn identify_operator(
    headers: &HeaderMap,
    operators: &[(String, Secret)],
) -> Result<Operator, AuthError> {
    let presented = bearer(headers).ok_or(AuthError::Missing)?;
    let mut found = None;
    for (name, secret) in operators {
        let matches = secret.matches(presented.as_bytes());
        if matches && found.is_none() {
            found = Some(name);
        }
    }
    found
        .map(|name| Operator(name.clone()))
        .ok_or(AuthError::Wrong)
}

/// Like [`require_bearer`] for an `/admin` scope guarded by [`AdminOperators`]: refuses a request without one
/// of its tokens with 401, and logs every admitted call with the operator's name (`operator`), the method
/// and the route pattern (never the path itself, which may hold an address).
pub async fn require_admin(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    use actix_web::HttpMessage;
    let verdict = match req.app_data::<web::Data<AdminOperators>>() {
        Some(operators) => identify_operator(req.headers(), &operators.0),
        None => Err(AuthError::Wrong),
    };
    match verdict {
        Ok(operator) => {
            tracing::info!(
                operator = %operator.0,
                http.method = %req.method(),
                http.route = %req.match_pattern().unwrap_or_else(|| "unmatched".into()),
                "admin call"
            );
            req.extensions_mut().insert(operator);
            Ok(next.call(req).await?.map_into_left_body())
        }
        Err(reason) => Ok(refuse(req, reason).map_into_right_body()),
    }
}

fn refuse(req: ServiceRequest, reason: AuthError) -> ServiceResponse {
    tracing::info!(auth.outcome = %reason, "request refused");
    let mut response = error_response(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "a valid bearer token is required",
        None,
    );
    response
        .headers_mut()
        .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    req.into_response(response)
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
}

/// An API key in a named header (Kratos `auth.type: api_key`, `in: header`).
pub fn check_api_key(headers: &HeaderMap, header: &str, keys: &[Secret]) -> Result<(), AuthError> {
    let presented = headers
        .get(header)
        .map(|v| v.as_bytes())
        .ok_or(AuthError::Missing)?;
    any_matches(keys, presented)
}

/// HTTP Basic credentials.
pub fn check_basic(headers: &HeaderMap, user: &str, password: &Secret) -> Result<(), AuthError> {
    let encoded = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .ok_or(AuthError::Missing)?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| AuthError::Wrong)?;
    let (given_user, given_password) = match decoded.iter().position(|b| *b == b':') {
        Some(i) => (&decoded[..i], &decoded[i + 1..]),
        None => return Err(AuthError::Wrong),
    };
    // Both halves are always compared so that timing does not tell which one was wrong.
    let user_ok = constant_time_eq(given_user, user.as_bytes());
    let password_ok = password.matches(given_password);
    if user_ok & password_ok {
        Ok(())
    } else {
        Err(AuthError::Wrong)
    }
}

/// What an IdP's hook calls must carry, as its `request_config.auth` can send it (Kratos: `api_key` in a
/// header, or `basic_auth`). Built from a settings section (`plugin.kratos`, `gateway.kratos`).
#[derive(Clone, Debug)]
pub struct HookCredentials {
    pub scheme: KratosAuth,
    /// Header carrying the API key.
    pub api_key_header: String,
    /// Accepted keys; none = every call is refused.
    pub api_keys: Vec<Secret>,
    pub basic_user: String,
    pub basic_password: Secret,
}

impl HookCredentials {
    /// Checks the request's credentials by the configured scheme, in constant time.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), AuthError> {
        match self.scheme {
            KratosAuth::ApiKey => check_api_key(headers, &self.api_key_header, &self.api_keys),
            KratosAuth::Basic => check_basic(headers, &self.basic_user, &self.basic_password),
        }
    }
}

fn any_matches(accepted: &[Secret], presented: &[u8]) -> Result<(), AuthError> {
    let mut found = false;
    for secret in accepted {
        found |= secret.matches(presented);
    }
    if found {
        Ok(())
    } else {
        Err(AuthError::Wrong)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::{HeaderName, HeaderValue};

    fn headers(name: &str, value: &str) -> HeaderMap {
        let mut map = HeaderMap::new();
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            map.insert(n, v);
        }
        map
    }

    #[test]
    fn bearer_tokens_are_checked() {
        let tokens = vec![Secret::new("t1"), Secret::new("t2")];
        assert_eq!(
            check_bearer(&headers("authorization", "Bearer t2"), &tokens),
            Ok(())
        );
        assert_eq!(
            check_bearer(&headers("authorization", "Bearer t3"), &tokens),
            Err(AuthError::Wrong)
        );
        assert_eq!(
            check_bearer(&HeaderMap::new(), &tokens),
            Err(AuthError::Missing)
        );
        assert_eq!(
            check_bearer(&headers("authorization", "Bearer "), &[]),
            Err(AuthError::Wrong)
        );
    }

    #[test]
    fn admin_tokens_name_their_operator() {
        let operators = vec![
            ("admin".to_string(), Secret::new("t1")),
            ("ana".to_string(), Secret::new("t2")),
        ];
        assert_eq!(
            identify_operator(&headers("authorization", "Bearer t2"), &operators),
            Ok(Operator("ana".into()))
        );
        assert_eq!(
            identify_operator(&headers("authorization", "Bearer t1"), &operators),
            Ok(Operator("admin".into()))
        );
        assert_eq!(
            identify_operator(&headers("authorization", "Bearer t3"), &operators),
            Err(AuthError::Wrong)
        );
        assert_eq!(
            identify_operator(&HeaderMap::new(), &operators),
            Err(AuthError::Missing)
        );
    }

    #[test]
    fn basic_credentials_are_checked() {
        let good = base64::engine::general_purpose::STANDARD.encode("kratos:s3cret");
        let bad = base64::engine::general_purpose::STANDARD.encode("kratos:nope");
        let password = Secret::new("s3cret");
        assert_eq!(
            check_basic(
                &headers("authorization", &format!("Basic {good}")),
                "kratos",
                &password
            ),
            Ok(())
        );
        assert_eq!(
            check_basic(
                &headers("authorization", &format!("Basic {bad}")),
                "kratos",
                &password
            ),
            Err(AuthError::Wrong)
        );
    }

    #[test]
    fn api_keys_are_checked() {
        let keys = vec![Secret::new("k")];
        assert_eq!(
            check_api_key(&headers("x-api-key", "k"), "x-api-key", &keys),
            Ok(())
        );
        assert_eq!(
            check_api_key(&headers("x-api-key", "j"), "x-api-key", &keys),
            Err(AuthError::Wrong)
        );
    }
}
