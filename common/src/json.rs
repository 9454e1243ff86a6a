//! JSON request bodies parsed from raw bytes, with errors that name the offending field, and the error
//! body every endpoint answers with.

use actix_web::http::StatusCode;
use actix_web::HttpResponse;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// A request body or parameter that could not be accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    /// Dotted path of the field (`password`, `data.code`), or `body` when the document itself is broken.
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Parses a JSON body; missing, unknown or mistyped fields are named in the error.
pub fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, FieldError> {
    if body.is_empty() {
        return Err(FieldError::new("body", "a JSON body is required"));
    }
    let text =
        std::str::from_utf8(body).map_err(|_| FieldError::new("body", "is not valid UTF-8"))?;
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let parsed: T = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let inner = error.inner();
        let path = error.path().to_string();
        let message = strip_position(&inner.to_string());
        if inner.is_syntax() || inner.is_eof() {
            return FieldError::new("body", format!("is not valid JSON: {message}"));
        }
        // serde reports a missing field at the parent's path; name the field itself.
        if let Some(name) = message
            .strip_prefix("missing field `")
            .and_then(|m| m.split('`').next())
        {
            let field = if path == "." {
                name.to_string()
            } else {
                format!("{path}.{name}")
            };
            return FieldError::new(field, "is required");
        }
        if message.starts_with("unknown field `") {
            // Here serde's path already ends with the unknown field.
            return FieldError::new(path, "is not a known field");
        }
        let field = if path == "." {
            "body".to_string()
        } else {
            path
        };
        FieldError::new(field, without_value(&message))
    })?;
    deserializer.end().map_err(|e| {
        FieldError::new(
            "body",
            format!("is not valid JSON: {}", strip_position(&e.to_string())),
        )
    })?;
    Ok(parsed)
}

/// serde quotes the value it refused (`invalid type: string "hunter2", expected u32`, ``unknown variant
/// `x` ``); the field may hold a password, code or token, so only the kind of value and what was expected
/// are kept.
fn without_value(message: &str) -> String {
    for prefix in ["invalid type: ", "invalid value: "] {
        if let Some((unexpected, expected)) = message
            .strip_prefix(prefix)
            .and_then(|rest| rest.rsplit_once(", expected "))
        {
            // `string "…"`, `integer `…``, `floating point `…``, `map`, `sequence`, ...: keep the kind.
            let kind: Vec<&str> = unexpected
                .split(' ')
                .take_while(|w| !w.starts_with(['"', '`']))
                .collect();
            return format!("{prefix}{}, expected {expected}", kind.join(" "));
        }
    }
    if let Some((_, expected)) = message
        .strip_prefix("unknown variant `")
        .and_then(|rest| rest.rsplit_once("`, expected "))
    {
        return format!("unknown variant, expected {expected}");
    }
    message.to_string()
}

fn strip_position(message: &str) -> String {
    match message.find(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

/// The error document of the Reclaim APIs: `{"error": {"code", "message", "field"?}}`.
#[derive(Debug, Serialize)]
pub struct ErrorBody<'a> {
    pub error: ErrorDetail<'a>,
}

#[derive(Debug, Serialize)]
pub struct ErrorDetail<'a> {
    pub code: &'a str,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<&'a str>,
}

/// Builds an error response in the common shape.
pub fn error_response(
    status: StatusCode,
    code: &str,
    message: impl Into<String>,
    field: Option<&str>,
) -> HttpResponse {
    HttpResponse::build(status).json(ErrorBody {
        error: ErrorDetail {
            code,
            message: message.into(),
            field,
        },
    })
}

impl actix_web::ResponseError for FieldError {
    fn status_code(&self) -> StatusCode {
        StatusCode::BAD_REQUEST
    }

    fn error_response(&self) -> HttpResponse {
        error_response(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            self.to_string(),
            Some(&self.field),
        )
    }
}

/// The error document Supabase Auth's hooks answer with: `{"error": {"http_code", "message"}}`. Supabase
/// reads it from a 2xx answer too, and then fails the user's API call with `http_code` and `message`.
pub fn supabase_error_response(
    status: StatusCode,
    http_code: StatusCode,
    message: impl Into<String>,
) -> HttpResponse {
    HttpResponse::build(status).json(serde_json::json!({
        "error": {"http_code": http_code.as_u16(), "message": message.into()}
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        identity_id: String,
        inner: Option<Inner>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Inner {
        count: u32,
    }

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Secretive {
        password: String,
        count: Option<u32>,
        kind: Option<Kind>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(rename_all = "snake_case")]
    enum Kind {
        Voluntary,
    }

    #[test]
    fn errors_never_echo_the_refused_value() {
        for (body, field, message) in [
            (
                r#"{"password": 918273645}"#,
                "password",
                "invalid type: integer, expected a string",
            ),
            (
                r#"{"password": 1.5e3}"#,
                "password",
                "invalid type: floating point, expected a string",
            ),
            (
                r#"{"password": "p", "count": "hunter2, expected x"}"#,
                "count",
                "invalid type: string, expected u32",
            ),
            (
                r#"{"password": "p", "count": -77777}"#,
                "count",
                "invalid value: integer, expected u32",
            ),
            (
                r#"{"password": "p", "kind": "s3cr3t`, expected "}"#,
                "kind",
                "unknown variant, expected `voluntary`",
            ),
        ] {
            let error = parse::<Secretive>(body.as_bytes()).err();
            assert_eq!(
                error.map(|e| (e.field, e.message)),
                Some((field.to_string(), message.to_string())),
                "{body}"
            );
        }
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(
            parse::<Body>(b"{}").err().map(|e| e.field),
            Some("identity_id".into())
        );
        assert_eq!(
            parse::<Body>(br#"{"identity_id":"a","inner":{"count":"x"}}"#)
                .err()
                .map(|e| e.field),
            Some("inner.count".into())
        );
        assert_eq!(
            parse::<Body>(b"{nope").err().map(|e| e.field),
            Some("body".into())
        );
        assert_eq!(
            parse::<Body>(br#"{"identity_id":"a","extra":1}"#)
                .err()
                .map(|e| e.field),
            Some("extra".into())
        );
        assert_eq!(
            parse::<Body>(&[0xff, 0xfe]).err().map(|e| e.field),
            Some("body".into())
        );
    }
}
